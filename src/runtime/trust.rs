//! Root trusts only what root owns, like sshd's StrictModes.
//!
//! A controller running as root runs the commands of its manifests as root
//! (or as the user they name). A manifest another user owns or may write,
//! or one in a folder another user may write (they could replace it), would
//! hand that user root. So, when the controller's effective uid is 0:
//!
//! - the manifest file (the file a ConfigMap-style link resolves to), its
//!   folder and the status folder must be owned by root and not writable by
//!   group or others;
//! - every folder above them up to `/` must be owned by root and not
//!   writable by group or others, **except** a root-owned folder with the
//!   sticky bit (`/tmp`, mode 1777): there only an entry's owner may rename
//!   or remove it, so the root-owned folder below cannot be swapped by
//!   anyone else. (sshd refuses even those; the sticky bit gives the same
//!   guarantee for the entry below, and temporary folders are where tests
//!   and throwaway setups live.) The manifest folder and the status folder
//!   themselves get no such exemption: others could add entries to them.
//!
//! Non-root controllers are not checked: they can only grant their own user.
//!
//! The rule itself ([`judge`]) is a pure function of what `stat` says; the
//! rest reads the file system.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A refused path and why, with the command that fixes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The path whose owner or mode is wrong.
    pub path: PathBuf,
    /// The full explanation, naming the path, owner, mode and the fix.
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What `stat` says of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Owning uid.
    pub uid: u32,
    /// Mode bits, including the file type bits or not (only 0o7777 is read).
    pub mode: u32,
    /// True for a folder.
    pub is_dir: bool,
}

/// The verdict on one path: `None` when the controller (effective uid
/// `euid`) may trust it. `what` names it in the message ("manifest",
/// "status folder", "folder above ..."); `ancestor` is true for the folders
/// above the checked path (a root-owned sticky folder is accepted there).
pub fn judge(what: &str, path: &Path, owner: Owner, ancestor: bool, euid: u32) -> Option<Refusal> {
    if euid != 0 {
        return None;
    }
    let owner_ok = owner.uid == 0 || owner.uid == euid;
    let writable = owner.mode & 0o022 != 0;
    let sticky = owner.is_dir && owner.mode & 0o1000 != 0;
    let mode_ok = !writable || (ancestor && sticky && owner_ok);
    if owner_ok && mode_ok {
        return None;
    }
    let p = path.display();
    let fix = match (owner_ok, mode_ok) {
        (false, false) => format!("chown root:root {p} && chmod go-w {p}"),
        (false, true) => format!("chown root:root {p}"),
        _ => format!("chmod go-w {p}"),
    };
    let mut found = Vec::new();
    if !owner_ok {
        found.push(format!("owned by uid {}", owner.uid));
    }
    if !mode_ok {
        found.push(format!(
            "writable by {} (mode {:04o})",
            match owner.mode & 0o022 {
                0o020 => "its group",
                0o002 => "other users",
                _ => "other users and its group",
            },
            owner.mode & 0o7777
        ));
    } else {
        found.push(format!("mode {:04o}", owner.mode & 0o7777));
    }
    Some(Refusal {
        path: path.to_path_buf(),
        message: format!(
            "the {what} {p} is {}; the controller runs as root and trusts only files and \
             folders root owns that no other user may write (fix: {fix})",
            found.join(", ")
        ),
    })
}

fn stat(path: &Path) -> Result<Owner, Refusal> {
    let m = std::fs::metadata(path).map_err(|e| Refusal {
        path: path.to_path_buf(),
        message: format!("cannot check the owner and mode of {}: {e}", path.display()),
    })?;
    Ok(Owner {
        uid: m.uid(),
        mode: m.mode(),
        is_dir: m.is_dir(),
    })
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Checks the folder `dir` (the manifest folder or the status folder, named
/// `what`) and every folder above it up to `/`. Always `Ok` unless the
/// controller runs as root.
pub fn check_folder(what: &str, dir: &Path) -> Result<(), Refusal> {
    let euid = euid();
    if euid != 0 {
        return Ok(());
    }
    let canonical = std::fs::canonicalize(dir).map_err(|e| Refusal {
        path: dir.to_path_buf(),
        message: format!("cannot resolve the {what} {}: {e}", dir.display()),
    })?;
    check_chain(what, &canonical, None, euid)
}

/// Checks `path` and the folders above it, up to and excluding `stop` (or
/// up to `/` when `stop` is `None`).
fn check_chain(what: &str, path: &Path, stop: Option<&Path>, euid: u32) -> Result<(), Refusal> {
    if let Some(r) = judge(what, path, stat(path)?, false, euid) {
        return Err(r);
    }
    for above in path.ancestors().skip(1) {
        if Some(above) == stop {
            break;
        }
        let what = format!("folder above the {what}");
        if let Some(r) = judge(&what, above, stat(above)?, true, euid) {
            return Err(r);
        }
    }
    Ok(())
}

/// Checks a manifest of the folder `dir`: the file it resolves to (a
/// ConfigMap-style link resolves inside `dir`) and the folders between that
/// file and `dir`. `dir` itself is checked by [`check_folder`]. Always `Ok`
/// unless the controller runs as root.
pub fn check_manifest(path: &Path, dir: &Path) -> Result<(), Refusal> {
    let euid = euid();
    if euid != 0 {
        return Ok(());
    }
    // A file that cannot be resolved cannot be read either: loading says why.
    let (Ok(target), Ok(dir)) = (std::fs::canonicalize(path), std::fs::canonicalize(dir)) else {
        return Ok(());
    };
    if target.starts_with(&dir) {
        check_chain("manifest", &target, Some(&dir), euid)
    } else {
        check_chain("manifest", &target, None, euid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: u32, mode: u32, is_dir: bool) -> Owner {
        Owner { uid, mode, is_dir }
    }

    #[test]
    fn a_root_owned_file_no_one_else_may_write_is_trusted() {
        let p = Path::new("/etc/sessionlet/web.yaml");
        assert_eq!(
            judge("manifest", p, owner(0, 0o100644, false), false, 0),
            None
        );
        assert_eq!(
            judge("manifest", p, owner(0, 0o100600, false), false, 0),
            None
        );
        assert_eq!(
            judge("manifest folder", p, owner(0, 0o40755, true), false, 0),
            None
        );
    }

    #[test]
    fn another_users_file_is_refused_with_the_fix() {
        let p = Path::new("/srv/m/web.yaml");
        let r = judge("manifest", p, owner(65534, 0o100644, false), false, 0).unwrap();
        assert!(r.message.contains("/srv/m/web.yaml"), "{r}");
        assert!(r.message.contains("owned by uid 65534"), "{r}");
        assert!(r.message.contains("mode 0644"), "{r}");
        assert!(
            r.message.contains("fix: chown root:root /srv/m/web.yaml)"),
            "{r}"
        );
    }

    #[test]
    fn group_or_other_writable_is_refused_with_the_fix() {
        let p = Path::new("/srv/m");
        let r = judge("manifest folder", p, owner(0, 0o40775, true), false, 0).unwrap();
        assert!(
            r.message.contains("writable by its group (mode 0775)"),
            "{r}"
        );
        assert!(r.message.contains("fix: chmod go-w /srv/m)"), "{r}");
        let r = judge("status folder", p, owner(7, 0o40757, true), false, 0).unwrap();
        assert!(r.message.contains("owned by uid 7"), "{r}");
        assert!(
            r.message.contains("writable by other users (mode 0757)"),
            "{r}"
        );
        assert!(
            r.message
                .contains("fix: chown root:root /srv/m && chmod go-w /srv/m)"),
            "{r}"
        );
    }

    #[test]
    fn a_sticky_root_folder_is_accepted_only_above_the_checked_folder() {
        let tmp = Path::new("/tmp");
        let sticky = owner(0, 0o41777, true);
        assert_eq!(judge("folder above", tmp, sticky, true, 0), None);
        assert!(judge("manifest folder", tmp, sticky, false, 0).is_some());
        // Sticky but owned by someone else: they may rename what is in it.
        assert!(judge("folder above", tmp, owner(1000, 0o41777, true), true, 0).is_some());
        // Writable without the sticky bit: refused above too.
        assert!(judge("folder above", tmp, owner(0, 0o40777, true), true, 0).is_some());
    }

    #[test]
    fn non_root_controllers_are_not_checked() {
        let p = Path::new("/home/me/m.yaml");
        assert_eq!(
            judge("manifest", p, owner(65534, 0o100666, false), false, 1000),
            None
        );
    }
}
