//! Value types that appear in manifests: durations, memory quantities and signal names.
//!
//! Each is written as a string in YAML and carries a JSON Schema `format`
//! (`duration`, `quantity`, `signal`) that the validator checks.

use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written like `250ms`, `30s`, `5m`, `1h30m` or `2d`, at most
/// [`Duration::MAX`] (3650 days, about 10 years).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// The longest duration a manifest or a flag may give: 3650 days (about
    /// 10 years). Anything longer is refused when parsed, so no deadline
    /// computed from a duration can leave the range of a clock.
    pub const MAX: Duration = Duration::from_secs(MAX_DURATION_DAYS * 86_400);
    /// Builds a duration from whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }
    /// Builds a duration from milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }
    /// The standard library duration.
    pub fn std(self) -> std::time::Duration {
        self.0
    }
    /// The same duration as a chrono duration, saturating on overflow.
    pub fn chrono(self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

/// [`Duration::MAX`] in days.
pub const MAX_DURATION_DAYS: u64 = 3650;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DurationError {
    input: String,
    why: &'static str,
}

/// Why a duration is too long, in [`DurationError`].
const TOO_LONG: &str = "longer than the maximum, 3650d (about 10 years)";

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid duration {:?}: {}", self.input, self.why)?;
        if self.why != TOO_LONG {
            f.write_str("; write a number followed by a unit, e.g. 250ms, 30s, 5m, 1h30m (units: ms, s, m, h, d)")?;
        }
        Ok(())
    }
}

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| DurationError {
            input: s.to_string(),
            why,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("it is empty"));
        }
        if t == "0" {
            return Ok(Duration::default());
        }
        let mut total: u128 = 0;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err("expected a number"));
            }
            let n: u128 = rest[..digits].parse().map_err(|_| err(TOO_LONG))?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let ms_per: u128 = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                "" => return Err(err("a unit is missing")),
                _ => return Err(err("unknown unit")),
            };
            total = n
                .checked_mul(ms_per)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| err(TOO_LONG))?;
        }
        let ms = u64::try_from(total).map_err(|_| err(TOO_LONG))?;
        let d = Duration::from_millis(ms);
        if d > Duration::MAX {
            return Err(err(TOO_LONG));
        }
        Ok(d)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, per) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if ms >= per {
                write!(f, "{}{}", ms / per, unit)?;
                ms %= per;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "duration",
            "pattern": "^([0-9]+(ms|s|m|h|d))+$|^0$",
            "description": "A duration: a number and a unit, repeated: 250ms, 30s, 5m, 1h30m, 2d. At most 3650d (about 10 years)."
        })
    }
}

/// A memory quantity in bytes, written `512Mi`, `2Gi`, `1G`, `1000k` or a
/// plain byte count, at most [`Quantity::MAX`] (1024Ti, one pebibyte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity(pub u64);

impl Quantity {
    /// The largest quantity accepted: 1024Ti (2^50 bytes, one pebibyte), so
    /// sums and products of a few quantities stay far from `u64::MAX`.
    pub const MAX: Quantity = Quantity(1 << 50);
}

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Not a number with a known suffix.
    #[error("invalid quantity {input:?}: write bytes, or a number with a suffix: Ki, Mi, Gi, Ti (powers of 1024) or k, M, G, T (powers of 1000), e.g. 512Mi")]
    Syntax {
        /// The text as written.
        input: String,
    },
    /// Larger than [`Quantity::MAX`].
    #[error("invalid quantity {input:?}: larger than the maximum, 1024Ti (2^50 bytes)")]
    TooLarge {
        /// The text as written.
        input: String,
    },
}

impl Quantity {
    /// `bytes` as a quantity, refused above [`Quantity::MAX`].
    fn bounded(bytes: u64, input: &str) -> Result<Quantity, QuantityError> {
        if bytes > Quantity::MAX.0 {
            return Err(QuantityError::TooLarge {
                input: input.to_string(),
            });
        }
        Ok(Quantity(bytes))
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || QuantityError::Syntax {
            input: s.to_string(),
        };
        let t = s.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let too_large = || QuantityError::TooLarge {
            input: s.to_string(),
        };
        // All digits: a parse failure can only be an overflow.
        let n: u64 = t[..digits].parse().map_err(|_| too_large())?;
        let mul: u64 = match &t[digits..] {
            "" => 1,
            "k" | "K" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            _ => return Err(err()),
        };
        let bytes = n.checked_mul(mul).ok_or_else(too_large)?;
        Quantity::bounded(bytes, s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, per) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if b >= per && b.is_multiple_of(per) {
                return write!(f, "{}{}", b / per, unit);
            }
        }
        write!(f, "{b}")
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a memory quantity such as 512Mi")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Quantity::bounded(v, &v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                let v = u64::try_from(v).map_err(E::custom)?;
                self.visit_u64(v)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "integer"],
            "format": "quantity",
            "pattern": "^[0-9]+(k|K|M|G|T|Ki|Mi|Gi|Ti)?$",
            "minimum": 0,
            "maximum": Quantity::MAX.0,
            "description": "Bytes, or a number with a suffix: Ki, Mi, Gi, Ti (1024-based) or k, M, G, T (1000-based). At most 1024Ti (2^50 bytes)."
        })
    }
}

/// A POSIX signal name such as `SIGTERM` (the `SIG` prefix is optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignalName(pub nix::sys::signal::Signal);

impl Default for SignalName {
    fn default() -> Self {
        SignalName(nix::sys::signal::Signal::SIGTERM)
    }
}

/// Signals a manifest may name as its stop signal.
pub const STOP_SIGNALS: &[&str] = &[
    "SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGWINCH",
];

/// Why a signal name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal {input:?}; allowed: SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGKILL, SIGUSR1, SIGUSR2, SIGWINCH")]
pub struct SignalError {
    input: String,
}

impl FromStr for SignalName {
    type Err = SignalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.trim().to_ascii_uppercase();
        let full = if up.starts_with("SIG") {
            up
        } else {
            format!("SIG{up}")
        };
        if !STOP_SIGNALS.contains(&full.as_str()) {
            return Err(SignalError {
                input: s.to_string(),
            });
        }
        nix::sys::signal::Signal::from_str(&full)
            .map(SignalName)
            .map_err(|_| SignalError {
                input: s.to_string(),
            })
    }
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl Serialize for SignalName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for SignalName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SignalName".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "signal",
            "enum": STOP_SIGNALS,
            "description": "A signal name."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_compound_units() {
        assert_eq!(
            "1h30m".parse::<Duration>().unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            "250ms".parse::<Duration>().unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!("0".parse::<Duration>().unwrap(), Duration::default());
        assert!("10".parse::<Duration>().is_err());
        assert!("5 minutes".parse::<Duration>().is_err());
        assert!("99999999999999999999d".parse::<Duration>().is_err());
        assert_eq!("3650d".parse::<Duration>().unwrap(), Duration::MAX);
        assert!("3650d1ms".parse::<Duration>().is_err());
        assert!("100000000d".parse::<Duration>().is_err());
        assert_eq!(Duration::from_secs(5400).to_string(), "1h30m");
    }

    #[test]
    fn quantities_parse_binary_and_decimal_suffixes() {
        assert_eq!("512Mi".parse::<Quantity>().unwrap(), Quantity(512 << 20));
        assert_eq!("1G".parse::<Quantity>().unwrap(), Quantity(1_000_000_000));
        assert_eq!("42".parse::<Quantity>().unwrap(), Quantity(42));
        assert!("1.5Gi".parse::<Quantity>().is_err());
        assert!("12MB".parse::<Quantity>().is_err());
        assert_eq!("1024Ti".parse::<Quantity>().unwrap(), Quantity::MAX);
        for too_large in [
            "1025Ti",
            "18446744073709551615",
            "99999999999999999999",
            "16777216T",
        ] {
            let e = too_large.parse::<Quantity>().unwrap_err();
            assert!(
                matches!(e, QuantityError::TooLarge { .. }),
                "{too_large}: {e}"
            );
        }
        let yaml = |v: &str| crate::manifest::codec::from_yaml::<Quantity>(v);
        assert_eq!(yaml("1125899906842624").unwrap(), Quantity::MAX);
        assert!(yaml("1125899906842625").is_err());
    }

    #[test]
    fn signal_names_accept_short_forms() {
        assert_eq!("TERM".parse::<SignalName>().unwrap().to_string(), "SIGTERM");
        assert!("SIGSEGV".parse::<SignalName>().is_err());
    }
}
