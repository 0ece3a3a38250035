//! The etcd coordinator (feature `etcd`): membership, claims, fencing.
//!
//! Keys, under `--etcd-prefix`:
//! - `members/<node>`: the node's name, put with its lease.
//! - `owners/<session>`: the owning node, put with the owner's lease in a
//!   transaction that succeeds only while the key does not exist
//!   (`create_revision == 0`); that create revision is the fencing token.
//! - `pools/<pool>`: the node that holds a pool deciding across its members
//!   (`maxConcurrent`, a budget), put with its lease; only that node claims
//!   the pool's members, so the pool's cap, queue and budget hold fleet-wide.
//! - `status/<session>`: the outcome once the session is finished, written
//!   only while the writer's token is the owner key's create revision (a
//!   stale owner's write fails), with the hash of the spec it finished
//!   under. No lease: a finished session stays finished after its node is
//!   gone, so no new owner runs it again, until its spec changes.
//! - `live/<session>`: the owner's live summary of the session (phase,
//!   restarts, reason, start, last exit code; [`super::view::Summary`]), put
//!   with the owner's lease under the same token compare, and only when it
//!   changed; it vanishes with a dead node. `get --etcd-endpoints` reads it.
//!
//! Every call has a deadline. A failed claim is never repeated blindly: the
//! next round reads the owner keys again and claims only what is still free
//! (and the claim's compare makes a repeat harmless in any case).
//!
//! Sized for large fleets: a prefix is read in pages ([`read_prefix`], every
//! page at one revision), so no reply nears the client's 4 MiB limit; the
//! lease is renewed in its own task, so a long round cannot let it expire;
//! claims go [`CLAIM_BATCH`] owner keys to a transaction.

use super::error::FleetError;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp,
};
use tokio::time::{timeout, Instant, MissedTickBehavior};

use super::view::Summary;
use super::{Config, Fleet};

/// How often the coordinator reads the fleet's state and claims.
const ROUND: Duration = Duration::from_millis(500);
/// At most this many claims a round, so one round stays short.
const CLAIMS_PER_ROUND: usize = 2_000;
/// Owner keys claimed in one transaction: each still compare-created, and
/// well under etcd's default `--max-txn-ops` (128).
pub const CLAIM_BATCH: usize = 100;
/// Keys in the first page of a prefix read; the next pages are sized from
/// the bytes a key took so far, to about [`PAGE_BYTES`].
pub const PAGE: i64 = 1_000;
/// The size a page aims at: a quarter of the client's 4 MiB reply limit.
/// Pages must be large too: etcd walks every key left in the range for
/// each page (to count them; 3.4's index takes no limit at all), so small
/// pages make a read of `n` keys cost `n²/page`: 1,000-key pages over
/// 100,000 owner keys tripled the claim time in the fleet simulation.
pub const PAGE_BYTES: usize = 1 << 20;
/// Bytes a key costs in a reply beyond its key and value (revisions,
/// lease, framing), for sizing pages.
const KV_OVERHEAD: usize = 32;
/// At most this many live summaries written a round (the rest next round).
const PUBLISH_PER_ROUND: usize = 200;

/// Joins the fleet: connects, resumes this node's lease (a controller
/// restarted within the lease keeps its sessions) or grants a new one, reads
/// what this node owns, and keeps all that up to date in tasks on the
/// current runtime: one renews the lease (and fences), one runs the rounds.
pub async fn start(cfg: Config) -> Result<Fleet, FleetError> {
    let mut conns = Endpoints::new(&cfg);
    let fleet = Fleet::new(&cfg.node);
    let lease = Arc::new(Mutex::new(LeaseState {
        lease: 0,
        deadline: Instant::now(),
        expired: false,
        fenced: false,
    }));
    let mut c = Coordinator {
        member_key: format!("{}members/{}", cfg.prefix, cfg.node),
        lease: lease.clone(),
        recorded: BTreeMap::new(),
        published: BTreeMap::new(),
        unowned_before: BTreeSet::new(),
        fleet: fleet.clone(),
        cfg,
    };
    // The first calls retry until the lease's length: etcd may be electing.
    let until = Instant::now() + c.cfg.lease_ttl;
    loop {
        let joined = match conns.client().await {
            Ok(client) => c.join(client).await,
            Err(e) => Err(e),
        };
        match joined {
            Ok(()) => break,
            Err(e) if Instant::now() < until => {
                tracing::warn!("joining the fleet: {e}; retrying");
                conns.rotate();
                tokio::time::sleep(ROUND).await;
            }
            Err(e) => {
                return Err(FleetError::Join {
                    endpoints: c.cfg.endpoints.join(","),
                    source: Box::new(e),
                })
            }
        }
    }
    hand_deadline_to_keeper(&c.cfg, &lease).await;
    // The renewer has its own connections: a long read on the round's
    // connection never delays a renewal.
    let renewer = Renewer {
        conns: Endpoints::new(&c.cfg),
        cfg: c.cfg.clone(),
        lease,
        fleet: fleet.clone(),
        keeper: None,
    };
    tokio::spawn(renewer.run());
    if let Ok(client) = conns.client().await {
        if let Err(e) = c.round(client).await {
            tracing::warn!("first fleet round: {e}");
        }
    }
    tracing::info!(
        node = c.cfg.node.as_str(),
        lease = c.lease_state().lease,
        owned = c.fleet.owned().len(),
        "joined the fleet"
    );
    tokio::spawn(async move { c.run(conns).await });
    Ok(fleet)
}

/// One client per etcd member, and the one in use. etcd-client does not
/// fail over by itself (with one member of three down, about a quarter of
/// its calls fail): after a failure the next call goes to the next member.
struct Endpoints {
    urls: Vec<String>,
    opts: ConnectOptions,
    clients: Vec<Option<Client>>,
    active: usize,
    call: Duration,
}

impl Endpoints {
    fn new(cfg: &Config) -> Self {
        let call = cfg.lease_ttl / 4;
        Endpoints {
            urls: cfg.endpoints.clone(),
            opts: ConnectOptions::new()
                .with_connect_timeout(call)
                .with_timeout(call),
            clients: cfg.endpoints.iter().map(|_| None).collect(),
            // Nodes start on different members, spreading the load.
            active: usize::try_from(
                crate::core::placement::weight(&cfg.node, "etcd")
                    % u64::try_from(cfg.endpoints.len().max(1)).unwrap_or(1),
            )
            .unwrap_or(0),
            call,
        }
    }

    /// The client of the member in use, connected on first use.
    async fn client(&mut self) -> Result<&mut Client, FleetError> {
        let i = self.active;
        if self.clients[i].is_none() {
            let url = &self.urls[i];
            let c = timeout(self.call, Client::connect([url], Some(self.opts.clone())))
                .await
                .map_err(|_| FleetError::Unreachable { url: url.clone() })?
                .map_err(|source| FleetError::Connect {
                    url: url.clone(),
                    source,
                })?;
            self.clients[i] = Some(c);
        }
        self.clients[i].as_mut().ok_or(FleetError::Unreachable {
            url: self.urls[i].clone(),
        })
    }

    /// The member in use failed: the next call goes to the next one.
    fn rotate(&mut self) {
        self.active = (self.active + 1) % self.urls.len().max(1);
    }
}

/// The membership lease as the renewer and the rounds share it.
#[derive(Debug, Clone, Copy)]
struct LeaseState {
    /// The lease id (0 before the first join).
    lease: i64,
    /// Before this instant the lease cannot have expired (less the
    /// margin): `sent + ttl - margin` of the latest renewal of this lease
    /// that was answered, `sent` being when it was sent.
    deadline: Instant,
    /// etcd said the lease is gone (TTL 0): the rounds join anew.
    expired: bool,
    /// Past the deadline without renewal: this node gave up its sessions.
    fenced: bool,
}

fn lock(lease: &Mutex<LeaseState>) -> MutexGuard<'_, LeaseState> {
    // Plain data: still usable after a panic elsewhere.
    lease.lock().unwrap_or_else(|p| p.into_inner())
}

/// A renewal of `lease` sent at `sent` returned `ttl` seconds: etcd expires
/// the lease no earlier than `sent + ttl`, so the deadline moves to that
/// less the margin (never back: every such bound holds).
fn renewed(state: &Mutex<LeaseState>, lease: i64, sent: Instant, ttl: i64, margin: Duration) {
    let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
    let mut s = lock(state);
    // A renewal of a lease replaced meanwhile says nothing of the new one.
    if s.lease == lease {
        // A TTL past what an Instant holds is no answer to trust: no bound.
        let bound = sent.checked_add(ttl.saturating_sub(margin)).unwrap_or(sent);
        s.deadline = s.deadline.max(bound);
    }
}

/// Tells the keeper how long the lease surely holds: past that without
/// a newer deadline it kills every session (the node fences itself even
/// when this controller is stopped or stuck). Nothing to do without a
/// keeper (`keeper_socket` unset, as in the fleet simulation).
async fn hand_deadline_to_keeper(cfg: &Config, lease: &Mutex<LeaseState>) {
    let Some(socket) = cfg.keeper_socket.clone() else {
        return;
    };
    let within = {
        let s = lock(lease);
        if s.fenced {
            return;
        }
        s.deadline.saturating_duration_since(Instant::now())
    };
    if within.is_zero() {
        return;
    }
    let sent =
        tokio::task::spawn_blocking(move || crate::runtime::fence::send(&socket, within)).await;
    match sent {
        Ok(Ok(())) => {}
        // Before the keeper is up, or while it restarts.
        Ok(Err(e)) => tracing::debug!("fleet: cannot hand the deadline to the keeper: {e}"),
        Err(e) => tracing::debug!("fleet: cannot hand the deadline to the keeper: {e}"),
    }
}

/// Renews the lease every [`ROUND`] on its own connections, hands each new
/// deadline to the keeper, and fences at the deadline, whatever the rounds
/// are doing (a round over a large fleet may take longer than the lease).
struct Renewer {
    cfg: Config,
    conns: Endpoints,
    lease: Arc<Mutex<LeaseState>>,
    fleet: Fleet,
    /// The keep-alive stream, and the lease it renews.
    keeper: Option<(i64, LeaseKeeper, LeaseKeepAliveStream)>,
}

impl Renewer {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(ROUND);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let s = *lock(&self.lease);
            if s.lease != 0 && !s.expired {
                // A failed renewal is tried at once on each other member.
                for _ in 0..self.conns.urls.len() {
                    match self.renew(s.lease).await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!("fleet: lease renewal failed: {e}");
                            self.keeper = None;
                            self.conns.rotate();
                        }
                    }
                }
            }
            self.fence_if_due();
            hand_deadline_to_keeper(&self.cfg, &self.lease).await;
        }
    }

    /// Past the deadline: the lease may expire before etcd hears from us
    /// again, so every session stops now, before another node can claim.
    /// Under the lease lock, so that a round cannot hand the controller
    /// sessions after this.
    fn fence_if_due(&self) {
        let mut s = lock(&self.lease);
        if s.fenced || Instant::now() < s.deadline {
            return;
        }
        tracing::error!(
            owned = self.fleet.owned().len(),
            "fleet: lease not renewed in time; fencing (stopping every owned session)"
        );
        s.fenced = true;
        self.fleet.metrics.fences.inc();
        self.fleet.metrics.owned.set(0);
        self.fleet.set_owned(BTreeMap::new());
    }

    async fn renew(&mut self, lease: i64) -> Result<(), FleetError> {
        let t = self.cfg.lease_ttl / 4;
        if self.keeper.as_ref().is_none_or(|(l, _, _)| *l != lease) {
            let client = self.conns.client().await?;
            let (k, st) = timeout(t, client.lease_keep_alive(lease)).await??;
            self.keeper = Some((lease, k, st));
        }
        let Some((_, keeper, stream)) = self.keeper.as_mut() else {
            return Ok(());
        };
        let sent = Instant::now();
        let res = async {
            keeper.keep_alive().await?;
            stream.message().await
        };
        match timeout(t, res).await {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                renewed(&self.lease, lease, sent, r.ttl(), self.cfg.fence_margin);
                Ok(())
            }
            Ok(Ok(Some(_))) => {
                // The lease expired: our keys went with it. The rounds join anew.
                self.keeper = None;
                tracing::warn!("fleet: the membership lease expired; joining again");
                let mut s = lock(&self.lease);
                if s.lease == lease {
                    s.expired = true;
                    self.fleet.metrics.owned.set(0);
                    self.fleet.set_owned(BTreeMap::new());
                }
                Ok(())
            }
            Ok(Ok(None)) => Err(FleetError::Keepalive("the stream closed")),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(FleetError::KeepaliveTimeout(t)),
        }
    }
}

struct Coordinator {
    cfg: Config,
    member_key: String,
    lease: Arc<Mutex<LeaseState>>,
    /// Finished sessions whose outcome is in etcd already.
    recorded: BTreeMap<String, u64>,
    /// The live summaries in etcd as this node last wrote them (under the
    /// current lease): only a summary that differs is written again.
    published: BTreeMap<String, Summary>,
    /// The sessions the last round found unowned.
    unowned_before: BTreeSet<String>,
    fleet: Fleet,
}

/// One owner key as read.
struct Owner {
    node: String,
    token: i64,
    lease: i64,
}

impl Coordinator {
    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}/{name}", self.cfg.prefix)
    }

    fn call_timeout(&self) -> Duration {
        self.cfg.lease_ttl / 4
    }

    fn lease_state(&self) -> LeaseState {
        *lock(&self.lease)
    }

    /// Resumes the lease named by this node's member key while etcd still
    /// holds it, else grants a new one and puts the member key with it.
    async fn join(&mut self, client: &mut Client) -> Result<(), FleetError> {
        let t = self.call_timeout();
        let sent = Instant::now();
        let got = timeout(t, client.get(self.member_key.as_str(), None)).await??;
        let mut lease = got.kvs().first().map_or(0, |kv| kv.lease());
        let mut ttl = 0;
        if lease != 0 {
            let live = timeout(t, client.lease_time_to_live(lease, None)).await??;
            ttl = live.ttl();
            if ttl <= 0 {
                lease = 0;
            }
        }
        if lease == 0 {
            let secs = i64::try_from(self.cfg.lease_ttl.as_secs()).unwrap_or(i64::MAX);
            let granted = timeout(t, client.lease_grant(secs, None)).await??;
            lease = granted.id();
            ttl = granted.ttl();
            let put = PutOptions::new().with_lease(lease);
            timeout(
                t,
                client.put(self.member_key.as_str(), self.cfg.node.as_str(), Some(put)),
            )
            .await??;
            tracing::info!(lease, "fleet: new membership lease");
            // The old lease's live summaries went with it.
            self.published.clear();
        } else {
            tracing::info!(lease, ttl, "fleet: resumed the membership lease");
        }
        {
            let mut s = lock(&self.lease);
            if s.lease != lease {
                // A bound of the old lease says nothing of this one.
                s.lease = lease;
                s.deadline = sent;
            }
            s.expired = false;
        }
        renewed(&self.lease, lease, sent, ttl, self.cfg.fence_margin);
        Ok(())
    }

    async fn run(mut self, mut conns: Endpoints) {
        let mut tick = tokio::time::interval(ROUND);
        // After a long round the next starts a round's length later, not at once.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let s = self.lease_state();
            let now = Instant::now();
            if s.expired || (s.fenced && now >= s.deadline) {
                // The lease is gone, or fenced and still no renewal: etcd
                // may have expired it ("lease not found"). Join again:
                // resume the lease if etcd still holds it, else take a new
                // one (the old keys went with the old lease, so this node
                // starts from nothing).
                let joined = match conns.client().await {
                    Ok(client) => self.join(client).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = joined {
                    tracing::warn!("fleet: rejoining: {e}");
                    conns.rotate();
                    continue;
                }
            }
            {
                let mut s = lock(&self.lease);
                if Instant::now() >= s.deadline || s.expired {
                    // The renewer fences (or has): nothing to claim.
                    continue;
                }
                if s.fenced {
                    tracing::info!("fleet: lease renewed again; claiming sessions again");
                    s.fenced = false;
                }
            }
            hand_deadline_to_keeper(&self.cfg, &self.lease).await;
            let round = match conns.client().await {
                Ok(client) => self.round(client).await,
                Err(e) => Err(e),
            };
            if let Err(e) = round {
                tracing::warn!("fleet: round failed: {e}");
                conns.rotate();
            }
        }
    }

    /// Reads members, owners and outcomes; records finished sessions;
    /// claims what placement gives this node.
    /// Every prefix is read at one revision (the first read's), so the
    /// round decides from one snapshot of the fleet.
    async fn round(&mut self, client: &mut Client) -> Result<(), FleetError> {
        let t = self.call_timeout();
        let lease = self.lease_state().lease;
        let mut rev = 0;
        let members = self.list(client, "members", &mut rev).await?;
        let live: BTreeSet<String> = members.into_keys().collect();
        let owners: BTreeMap<String, Owner> = self
            .list(client, "owners", &mut rev)
            .await?
            .into_iter()
            .map(|(name, (node, token, lease))| (name, Owner { node, token, lease }))
            .collect();
        // A finished outcome counts for the spec it finished under (a record
        // without a hash, from an older build, counts for any spec).
        let records = self.list(client, "status", &mut rev).await?;
        // Hashed only where there is something to compare: a spec's hash
        // is a serialisation, too dear for every declared session a round.
        let done = self.fleet.take_done();
        let hashes = self
            .fleet
            .declared_hashes_of(records.keys().chain(done.keys()));
        let finished: BTreeSet<String> = records
            .into_iter()
            .filter(|(name, (value, _, _))| {
                let recorded = serde_json::from_str::<serde_json::Value>(value)
                    .ok()
                    .and_then(|v| v["spec"].as_str().map(str::to_string));
                match recorded {
                    None => true,
                    Some(h) => hashes
                        .get(name)
                        .is_none_or(|now| format!("{now:016x}") == h),
                }
            })
            .map(|(name, _)| name)
            .collect();
        self.fleet.set_finished(finished.clone());

        let mut mine: BTreeMap<String, i64> = owners
            .iter()
            .filter(|(_, o)| o.node == self.cfg.node && o.lease == lease)
            .map(|(n, o)| (n.clone(), o.token))
            .collect();

        // Outcomes of sessions finished here, fenced by their tokens.
        let summaries = self.fleet.summaries();
        for (name, hash) in done {
            let Some(token) = mine.get(&name).copied() else {
                continue;
            };
            // An outcome of a spec the manifests no longer declare is moot.
            let current = hashes.get(&name) == Some(&hash);
            if !current || self.recorded.get(&name) == Some(&hash) || finished.contains(&name) {
                continue;
            }
            let owner_key = self.key("owners", &name);
            let mut value = serde_json::json!({
                "node": self.cfg.node,
                "token": token,
                "done": true,
                "spec": format!("{hash:016x}"),
            });
            // The phase, for the fleet view once the owner (and its live
            // summary) is gone; readers of `status/` only need the key.
            if let Some(sum) = summaries.get(&name) {
                value["phase"] = sum.phase.clone().into();
                if let Some(r) = &sum.reason {
                    value["reason"] = r.clone().into();
                }
            }
            let txn = Txn::new()
                .when([Compare::create_revision(owner_key, CompareOp::Equal, token)])
                .and_then([TxnOp::put(
                    self.key("status", &name),
                    value.to_string(),
                    None,
                )]);
            match timeout(t, client.txn(txn)).await {
                Ok(Ok(r)) if r.succeeded() => {
                    self.recorded.insert(name, hash);
                }
                Ok(Ok(_)) => tracing::warn!(
                    session = name.as_str(),
                    "fleet: not the owner any more; outcome not recorded"
                ),
                // Retried next round (a repeat of this write is harmless).
                Ok(Err(e)) => tracing::warn!(session = name.as_str(), "fleet: {e}"),
                Err(_) => tracing::warn!(session = name.as_str(), "fleet: no answer"),
            }
        }

        let declared: BTreeSet<String> = self
            .fleet
            .declared()
            .into_iter()
            .filter(|s| !finished.contains(s))
            .collect();
        let owner_nodes: BTreeMap<String, String> = owners
            .iter()
            .map(|(n, o)| (n.clone(), o.node.clone()))
            .collect();
        // Members of pools that decide across their members go with their
        // pool (see `claim_grouped`); the rest are placed one by one.
        let grouped: BTreeMap<String, String> = self
            .fleet
            .grouped()
            .into_iter()
            .filter(|(s, _)| declared.contains(s))
            .collect();
        let singles: BTreeSet<String> = declared
            .iter()
            .filter(|s| !grouped.contains_key(*s))
            .cloned()
            .collect();
        let claims: Vec<String> =
            crate::core::placement::to_claim(&self.cfg.node, &singles, &owner_nodes, &live)
                .into_iter()
                // Owned by a node whose member key is gone: its owner key
                // goes with its lease; claim once it has.
                .filter(|name| !owners.contains_key(name))
                .take(CLAIMS_PER_ROUND)
                .collect();
        for batch in claims.chunks(CLAIM_BATCH) {
            self.claim(client, lease, batch, None, &mut mine).await?;
        }
        self.claim_grouped(
            client,
            lease,
            &mut rev,
            &live,
            &owner_nodes,
            &grouped,
            &mut mine,
        )
        .await?;
        // Work nobody runs is never silent: a gauge, and a warning.
        let reasons = unowned_reasons(&declared, &mine, &owner_nodes, &live);
        let unowned = reasons.len();
        let m = &self.fleet.metrics;
        m.unowned.set(i64::try_from(unowned).unwrap_or(i64::MAX));
        m.members.set(i64::try_from(live.len()).unwrap_or(i64::MAX));
        m.owned.set(i64::try_from(mine.len()).unwrap_or(i64::MAX));
        if unowned > 0 && live.is_empty() {
            tracing::warn!(unowned, "fleet: sessions owned by no live node");
        }
        // ... and a reason in the statuses, a condition in the controller's,
        // for sessions unowned two rounds running: a new session is unowned
        // on the nodes it is not placed on until its claim is read, and that
        // blink would rewrite every status file twice.
        let current: BTreeSet<String> = reasons.keys().cloned().collect();
        let lasting = reasons
            .into_iter()
            .filter(|(n, _)| self.unowned_before.contains(n))
            .collect();
        self.unowned_before = current;
        self.fleet.set_unowned(lasting);
        if self.holds(lease) {
            self.publish(client, lease, &mine).await;
            // Under the lease lock: the renewer cannot fence in between, and
            // once it has, no round hands the controller sessions again.
            let s = lock(&self.lease);
            if !s.fenced && !s.expired && s.lease == lease && Instant::now() < s.deadline {
                self.fleet.set_owned(mine);
            }
        }
        self.fleet.set_owners(owner_nodes);
        Ok(())
    }

    /// Places the pools that decide across their members (`grouped`:
    /// member → pool) as units: one node holds `pools/<pool>` (claimed like
    /// a session, with its lease) and only that node claims the pool's
    /// members, in a transaction that also checks it still holds the pool.
    /// Its core then makes every capacity, queue and budget decision of the
    /// pool, which therefore holds across the fleet. A pool this node holds
    /// with nothing left to run is let go, so that the next member of it
    /// may go to whichever node the hash picks then.
    #[allow(clippy::too_many_arguments)]
    async fn claim_grouped(
        &mut self,
        client: &mut Client,
        lease: i64,
        rev: &mut i64,
        live: &BTreeSet<String>,
        owners: &BTreeMap<String, String>,
        grouped: &BTreeMap<String, String>,
        mine: &mut BTreeMap<String, i64>,
    ) -> Result<(), FleetError> {
        let t = self.call_timeout();
        let held = self.list(client, "pools", rev).await?;
        let mut pool_owners: BTreeMap<String, String> = held
            .iter()
            .map(|(p, (node, _, _))| (p.clone(), node.clone()))
            .collect();
        let mut my_pools: BTreeMap<String, i64> = held
            .iter()
            .filter(|(_, (node, _, l))| *node == self.cfg.node && *l == lease)
            .map(|(p, (_, token, _))| (p.clone(), *token))
            .collect();
        let needed: BTreeSet<String> = grouped.values().cloned().collect();
        for (pool, token) in my_pools.clone() {
            if needed.contains(&pool) {
                continue;
            }
            let key = self.key("pools", &pool);
            let txn = Txn::new()
                .when([Compare::create_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    token,
                )])
                .and_then([TxnOp::delete(key.as_str(), None)]);
            if let Ok(Ok(_)) = timeout(t, client.txn(txn)).await {
                my_pools.remove(&pool);
                pool_owners.remove(&pool);
            }
        }
        let claims = crate::core::placement::to_claim(&self.cfg.node, &needed, &pool_owners, live);
        for pool in claims {
            if held.contains_key(&pool) {
                continue; // its holder's lease is going; claim once it has
            }
            let key = self.key("pools", &pool);
            let put = PutOptions::new().with_lease(lease);
            let txn = Txn::new()
                .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.as_str(), self.cfg.node.as_str(), Some(put))]);
            match timeout(t, client.txn(txn)).await {
                Ok(Ok(r)) if r.succeeded() => {
                    let token = r.header().map_or(0, |h| h.revision());
                    tracing::info!(pool = pool.as_str(), token, "fleet: claimed pool");
                    my_pools.insert(pool.clone(), token);
                    pool_owners.insert(pool, self.cfg.node.clone());
                }
                Ok(Ok(_)) => {}
                // Ambiguous: the next round reads the key and decides.
                Ok(Err(e)) => {
                    return Err(FleetError::Claim {
                        what: format!("pool {pool}"),
                        message: e.to_string(),
                    })
                }
                Err(_) => {
                    return Err(FleetError::Claim {
                        what: format!("pool {pool}"),
                        message: "no answer".into(),
                    })
                }
            }
        }
        let members = crate::core::placement::members_to_claim(
            &self.cfg.node,
            grouped,
            &pool_owners,
            owners,
            live,
        );
        // Batched per pool: each batch checks its pool is still held.
        let mut by_pool: BTreeMap<&String, Vec<String>> = BTreeMap::new();
        for name in members.into_iter().take(CLAIMS_PER_ROUND) {
            if let Some(pool) = grouped.get(&name).filter(|p| my_pools.contains_key(*p)) {
                by_pool.entry(pool).or_default().push(name);
            }
        }
        for (pool, names) in by_pool {
            let Some(pool_token) = my_pools.get(pool).copied() else {
                continue;
            };
            let pool_key = self.key("pools", pool);
            for batch in names.chunks(CLAIM_BATCH) {
                self.claim(
                    client,
                    lease,
                    batch,
                    Some((pool_key.clone(), pool_token)),
                    mine,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Writes the live summaries of the sessions owned here that changed
    /// since last written, each under its fencing token (a stale owner's
    /// write fails) and with this node's lease (gone with the node). A
    /// failed write is tried again next round (a repeat is harmless).
    async fn publish(&mut self, client: &mut Client, lease: i64, mine: &BTreeMap<String, i64>) {
        let t = self.call_timeout();
        self.published.retain(|n, s| mine.get(n) == Some(&s.token));
        let summaries = self.fleet.summaries();
        let mut writes = 0;
        for (name, token) in mine {
            if writes >= PUBLISH_PER_ROUND {
                break;
            }
            let Some(sum) = summaries.get(name) else {
                // Claimed this round: the controller has not seen it yet.
                continue;
            };
            let sum = Summary {
                node: self.cfg.node.clone(),
                token: *token,
                ..sum.clone()
            };
            if self.published.get(name) == Some(&sum) {
                continue;
            }
            writes += 1;
            let value = match serde_json::to_string(&sum) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(session = name.as_str(), "fleet: summary: {e}");
                    continue;
                }
            };
            let put = PutOptions::new().with_lease(lease);
            let txn = Txn::new()
                .when([Compare::create_revision(
                    self.key("owners", name),
                    CompareOp::Equal,
                    *token,
                )])
                .and_then([TxnOp::put(self.key("live", name), value, Some(put))]);
            match timeout(t, client.txn(txn)).await {
                Ok(Ok(r)) if r.succeeded() => {
                    self.published.insert(name.clone(), sum);
                }
                Ok(Ok(_)) => tracing::warn!(
                    session = name.as_str(),
                    "fleet: not the owner any more; live status not written"
                ),
                Ok(Err(e)) => {
                    tracing::warn!(session = name.as_str(), "fleet: live status: {e}");
                    return;
                }
                Err(_) => {
                    tracing::warn!(session = name.as_str(), "fleet: live status: no answer");
                    return;
                }
            }
        }
    }

    /// Whether `lease` is still this node's, unexpired and not fenced.
    fn holds(&self, lease: i64) -> bool {
        let s = self.lease_state();
        s.lease == lease && !s.expired && !s.fenced && Instant::now() < s.deadline
    }

    /// Claims the sessions `names` (at most [`CLAIM_BATCH`]) for this node
    /// in one transaction: each owner key is put with this node's lease only
    /// while it does not exist (and, for members of a grouped pool, while
    /// `held` — the pool key and this node's token of it — still holds). A
    /// transaction is all or nothing, so when some key of the batch was
    /// taken meanwhile, nothing is put and each is tried on its own (each
    /// still a compare-create), so that one taken key holds back no other.
    /// A won claim's revision is the fencing token.
    /// An ambiguous failure (maybe claimed, maybe not) is not retried: the
    /// round ends (the next member is asked next), and the next round reads
    /// the owner keys back and decides key by key (a key put with this
    /// node's lease is this node's).
    async fn claim(
        &mut self,
        client: &mut Client,
        lease: i64,
        names: &[String],
        held: Option<(String, i64)>,
        mine: &mut BTreeMap<String, i64>,
    ) -> Result<(), FleetError> {
        if names.is_empty() {
            return Ok(());
        }
        if let Some(token) = self.claim_txn(client, lease, names, &held).await? {
            self.won(names, token, mine);
            return Ok(());
        }
        if names.len() > 1 {
            for name in names {
                let one = std::slice::from_ref(name);
                if let Some(token) = self.claim_txn(client, lease, one, &held).await? {
                    self.won(one, token, mine);
                }
            }
        }
        Ok(())
    }

    fn won(&self, names: &[String], token: i64, mine: &mut BTreeMap<String, i64>) {
        for name in names {
            tracing::info!(session = name.as_str(), token, "fleet: claimed");
            self.fleet.metrics.claims.inc();
            mine.insert(name.clone(), token);
        }
    }

    /// One claim transaction: `Some(revision)` when every key was put,
    /// `None` when a compare failed (nothing put), an error when unknown.
    async fn claim_txn(
        &self,
        client: &mut Client,
        lease: i64,
        names: &[String],
        held: &Option<(String, i64)>,
    ) -> Result<Option<i64>, FleetError> {
        let keys: Vec<String> = names.iter().map(|n| self.key("owners", n)).collect();
        let mut when: Vec<Compare> = keys
            .iter()
            .map(|k| Compare::create_revision(k.as_str(), CompareOp::Equal, 0))
            .collect();
        if let Some((pool_key, token)) = held {
            when.push(Compare::create_revision(
                pool_key.as_str(),
                CompareOp::Equal,
                *token,
            ));
        }
        let put = PutOptions::new().with_lease(lease);
        let ops: Vec<TxnOp> = keys
            .iter()
            .map(|k| TxnOp::put(k.as_str(), self.cfg.node.as_str(), Some(put.clone())))
            .collect();
        let txn = Txn::new().when(when).and_then(ops);
        let what = match names {
            [one] => one.clone(),
            _ => format!(
                "{} sessions from {}",
                names.len(),
                names.first().map_or("", String::as_str)
            ),
        };
        match timeout(self.call_timeout(), client.txn(txn)).await {
            Ok(Ok(r)) if r.succeeded() => Ok(Some(r.header().map_or(0, |h| h.revision()))),
            Ok(Ok(_)) => Ok(None),
            Ok(Err(e)) => Err(FleetError::Claim {
                what,
                message: e.to_string(),
            }),
            Err(_) => Err(FleetError::Claim {
                what,
                message: "no answer".into(),
            }),
        }
    }

    /// Keys under `kind/`: name → (value, create revision, lease), read in
    /// pages at revision `rev` (0: the newest, which then becomes `rev`).
    async fn list(
        &self,
        client: &mut Client,
        kind: &str,
        rev: &mut i64,
    ) -> Result<BTreeMap<String, (String, i64, i64)>, FleetError> {
        let prefix = self.key(kind, "");
        let kvs = read_prefix(client, &prefix, rev, self.call_timeout()).await?;
        let mut out = BTreeMap::new();
        for kv in kvs {
            let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str()) else {
                continue;
            };
            if let Some(name) = k.strip_prefix(prefix.as_str()) {
                out.insert(
                    name.to_string(),
                    (v.to_string(), kv.create_revision(), kv.lease()),
                );
            }
        }
        Ok(out)
    }
}

/// Every key under `prefix`, in pages (the first of [`PAGE`] keys, the
/// next sized to about [`PAGE_BYTES`] from the bytes a key took so far;
/// each call within `call`), all at revision `rev` (0: the newest, which
/// then becomes `rev`), so the pages make one snapshot and no reply nears
/// the client's 4 MiB limit however many keys there are. A revision
/// compacted meanwhile fails the read (the caller's next round reads anew).
pub async fn read_prefix(
    client: &mut Client,
    prefix: &str,
    rev: &mut i64,
    call: Duration,
) -> Result<Vec<KeyValue>, FleetError> {
    let end = prefix_end(prefix.as_bytes());
    let mut from = prefix.as_bytes().to_vec();
    let mut out = Vec::new();
    let mut limit = PAGE;
    let mut bytes = 0usize;
    loop {
        let mut o = GetOptions::new().with_range(end.clone()).with_limit(limit);
        if *rev > 0 {
            o = o.with_revision(*rev);
        }
        let mut got = timeout(call, client.get(from.clone(), Some(o)))
            .await
            .map_err(|_| FleetError::ReadTimeout {
                prefix: prefix.to_string(),
                within: call,
            })??;
        if *rev <= 0 {
            *rev = got.header().map_or(0, |h| h.revision());
        }
        let more = got.more();
        let kvs = got.take_kvs();
        let last = kvs.last().map(|kv| kv.key().to_vec());
        bytes = kvs.iter().fold(bytes, |b, kv| {
            b.saturating_add(kv.key().len() + kv.value().len() + KV_OVERHEAD)
        });
        out.extend(kvs);
        // The average key so far sizes the next page (between 100 keys
        // and 100,000): a page of unusually large values stays under the
        // limit with room to spare (4 times the aim).
        let per_key = (bytes / out.len().max(1)).max(1);
        limit = i64::try_from((PAGE_BYTES / per_key).clamp(100, 100_000)).unwrap_or(PAGE);
        match last {
            // The next page starts just after the last key read.
            Some(mut k) if more => {
                k.push(0);
                from = k;
            }
            _ => return Ok(out),
        }
    }
}

/// The first key after every key starting with `prefix` (etcd's range end
/// of a prefix); `\0` (every key) for a prefix of only 0xff bytes.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The declared, unfinished sessions with no live owner (not owned here, and
/// their owner key, if any, names no live member), each with why.
fn unowned_reasons(
    declared: &BTreeSet<String>,
    mine: &BTreeMap<String, i64>,
    owners: &BTreeMap<String, String>,
    live: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    declared
        .iter()
        .filter(|s| !mine.contains_key(*s))
        .filter_map(|s| Some((s.clone(), super::view::why_unowned(s, live, owners)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_just_after_its_last_key() {
        assert_eq!(prefix_end(b"/s/owners/"), b"/s/owners0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
