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

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, LeaseKeepAliveStream, LeaseKeeper,
    PutOptions, Txn, TxnOp,
};
use tokio::time::{timeout, Instant};

use super::view::Summary;
use super::{Config, Fleet};

/// How often the coordinator reads the fleet's state and claims.
const ROUND: Duration = Duration::from_millis(500);
/// At most this many claims a round, so one round stays short.
const CLAIMS_PER_ROUND: usize = 200;
/// At most this many live summaries written a round (the rest next round).
const PUBLISH_PER_ROUND: usize = 200;

/// Joins the fleet: connects, resumes this node's lease (a controller
/// restarted within the lease keeps its sessions) or grants a new one, reads
/// what this node owns, and keeps all that up to date in a task on the
/// current runtime.
pub async fn start(cfg: Config) -> anyhow::Result<Fleet> {
    let mut conns = Endpoints::new(&cfg);
    let fleet = Fleet::new(&cfg.node);
    let mut c = Coordinator {
        member_key: format!("{}members/{}", cfg.prefix, cfg.node),
        lease: 0,
        keeper: None,
        deadline: Instant::now(),
        fenced: false,
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
            Err(e) => anyhow::bail!(
                "cannot join the fleet over etcd (--etcd-endpoints {}): {e}",
                c.cfg.endpoints.join(",")
            ),
        }
    }
    if let Ok(client) = conns.client().await {
        if let Err(e) = c.round(client).await {
            tracing::warn!("first fleet round: {e}");
        }
    }
    tracing::info!(
        node = c.cfg.node.as_str(),
        lease = c.lease,
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
    async fn client(&mut self) -> anyhow::Result<&mut Client> {
        let i = self.active;
        if self.clients[i].is_none() {
            let url = &self.urls[i];
            let c = timeout(self.call, Client::connect([url], Some(self.opts.clone())))
                .await
                .map_err(|_| anyhow::anyhow!("{url}: no answer"))?
                .map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
            self.clients[i] = Some(c);
        }
        self.clients[i]
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("no etcd client"))
    }

    /// The member in use failed: the next call goes to the next one.
    fn rotate(&mut self) {
        self.active = (self.active + 1) % self.urls.len().max(1);
    }
}

struct Coordinator {
    cfg: Config,
    member_key: String,
    lease: i64,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    /// Before this instant the lease cannot have expired (less the margin).
    deadline: Instant,
    /// Past the deadline without renewal: this node gave up its sessions.
    fenced: bool,
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

    /// Resumes the lease named by this node's member key while etcd still
    /// holds it, else grants a new one and puts the member key with it.
    async fn join(&mut self, client: &mut Client) -> anyhow::Result<()> {
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
        self.lease = lease;
        self.keeper = None;
        self.renewed(sent, ttl);
        Ok(())
    }

    /// A renewal sent at `sent` returned `ttl` seconds: etcd expires the
    /// lease no earlier than `sent + ttl`.
    fn renewed(&mut self, sent: Instant, ttl: i64) {
        let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
        self.deadline = sent + ttl.saturating_sub(self.cfg.fence_margin);
        if self.fenced {
            tracing::info!("fleet: lease renewed again; claiming sessions again");
            self.fenced = false;
        }
    }

    async fn keep_alive(&mut self, client: &mut Client) -> anyhow::Result<()> {
        let t = self.call_timeout();
        if self.keeper.is_none() {
            self.keeper = Some(timeout(t, client.lease_keep_alive(self.lease)).await??);
        }
        let Some((keeper, stream)) = self.keeper.as_mut() else {
            return Ok(());
        };
        let sent = Instant::now();
        let res = async {
            keeper.keep_alive().await?;
            stream.message().await
        };
        match timeout(t, res).await {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                self.renewed(sent, r.ttl());
                Ok(())
            }
            Ok(Ok(Some(_))) => {
                // The lease expired: our keys went with it. Join anew.
                self.keeper = None;
                tracing::warn!("fleet: the membership lease expired; joining again");
                self.fleet.set_owned(BTreeMap::new());
                self.join(client).await
            }
            Ok(Ok(None)) => {
                self.keeper = None;
                anyhow::bail!("keepalive stream closed")
            }
            Ok(Err(e)) => {
                self.keeper = None;
                Err(e.into())
            }
            Err(_) => {
                self.keeper = None;
                anyhow::bail!("keepalive: no answer within {t:?}")
            }
        }
    }

    async fn run(mut self, mut conns: Endpoints) {
        let mut tick = tokio::time::interval(ROUND);
        let mut last_keepalive = Instant::now();
        // Renewing every round (a message on an open stream) keeps the
        // deadline as far ahead as it can be: a leader election in etcd
        // then rarely outlasts it.
        let every = ROUND;
        loop {
            tick.tick().await;
            if last_keepalive.elapsed() >= every || self.keeper.is_none() {
                last_keepalive = Instant::now();
                // A failed renewal is tried at once on each other member.
                for _ in 0..conns.urls.len() {
                    let renewed = match conns.client().await {
                        Ok(client) => self.keep_alive(client).await,
                        Err(e) => Err(e),
                    };
                    match renewed {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!("fleet: lease renewal failed: {e}");
                            self.keeper = None;
                            conns.rotate();
                        }
                    }
                }
            }
            if self.fenced {
                // Fenced and still no renewal: etcd may have expired the
                // lease ("lease not found"). Join again: resume the lease if
                // etcd still holds it, else take a new one (the old keys
                // went with the old lease, so this node starts from nothing).
                let joined = match conns.client().await {
                    Ok(client) => self.join(client).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = joined {
                    tracing::warn!("fleet: rejoining: {e}");
                    conns.rotate();
                }
            }
            if Instant::now() >= self.deadline {
                if !self.fenced {
                    // The lease may expire before etcd hears from us again:
                    // stop every session now, before another node can claim.
                    tracing::error!(
                        owned = self.fleet.owned().len(),
                        "fleet: lease not renewed in time; fencing (stopping every owned session)"
                    );
                    self.fenced = true;
                    self.fleet.metrics.fences.inc();
                    self.fleet.metrics.owned.set(0);
                    self.fleet.set_owned(BTreeMap::new());
                }
                continue;
            }
            self.hand_deadline_to_keeper().await;
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

    /// Tells the keeper how long the lease surely holds: past that without
    /// a newer deadline it kills every session (the node fences itself even
    /// when this controller is stopped or stuck).
    async fn hand_deadline_to_keeper(&self) {
        let Some(socket) = self.cfg.keeper_socket.clone() else {
            return;
        };
        let within = self.deadline.saturating_duration_since(Instant::now());
        let sent =
            tokio::task::spawn_blocking(move || crate::runtime::fence::send(&socket, within)).await;
        match sent {
            Ok(Ok(())) => {}
            // Before the keeper is up, or while it restarts.
            Ok(Err(e)) => tracing::debug!("fleet: cannot hand the deadline to the keeper: {e}"),
            Err(e) => tracing::debug!("fleet: cannot hand the deadline to the keeper: {e}"),
        }
    }

    /// Reads members, owners and outcomes; records finished sessions;
    /// claims what placement gives this node.
    async fn round(&mut self, client: &mut Client) -> anyhow::Result<()> {
        let t = self.call_timeout();
        let members = self.list(client, "members").await?;
        let live: BTreeSet<String> = members.into_keys().collect();
        let owners: BTreeMap<String, Owner> = self
            .list(client, "owners")
            .await?
            .into_iter()
            .map(|(name, (node, token, lease))| (name, Owner { node, token, lease }))
            .collect();
        // A finished outcome counts for the spec it finished under (a record
        // without a hash, from an older build, counts for any spec).
        let hashes = self.fleet.declared_hashes();
        let finished: BTreeSet<String> = self
            .list(client, "status")
            .await?
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
            .filter(|(_, o)| o.node == self.cfg.node && o.lease == self.lease)
            .map(|(n, o)| (n.clone(), o.token))
            .collect();

        // Outcomes of sessions finished here, fenced by their tokens.
        let summaries = self.fleet.summaries();
        for (name, hash) in self.fleet.take_done() {
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
        let claims =
            crate::core::placement::to_claim(&self.cfg.node, &singles, &owner_nodes, &live);
        for name in claims.into_iter().take(CLAIMS_PER_ROUND) {
            if owners.contains_key(&name) {
                // Owned by a node whose member key is gone: its owner key
                // goes with its lease; claim once it has.
                continue;
            }
            self.claim(client, name, None, &mut mine).await?;
        }
        self.claim_grouped(client, &live, &owner_nodes, &grouped, &mut mine)
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
        if Instant::now() < self.deadline {
            self.publish(client, &mine).await;
            self.fleet.set_owned(mine);
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
    async fn claim_grouped(
        &mut self,
        client: &mut Client,
        live: &BTreeSet<String>,
        owners: &BTreeMap<String, String>,
        grouped: &BTreeMap<String, String>,
        mine: &mut BTreeMap<String, i64>,
    ) -> anyhow::Result<()> {
        let t = self.call_timeout();
        let held = self.list(client, "pools").await?;
        let mut pool_owners: BTreeMap<String, String> = held
            .iter()
            .map(|(p, (node, _, _))| (p.clone(), node.clone()))
            .collect();
        let mut my_pools: BTreeMap<String, i64> = held
            .iter()
            .filter(|(_, (node, _, lease))| *node == self.cfg.node && *lease == self.lease)
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
            let put = PutOptions::new().with_lease(self.lease);
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
                Ok(Err(e)) => anyhow::bail!("claim of pool {pool}: {e}"),
                Err(_) => anyhow::bail!("claim of pool {pool}: no answer"),
            }
        }
        let members = crate::core::placement::members_to_claim(
            &self.cfg.node,
            grouped,
            &pool_owners,
            owners,
            live,
        );
        for name in members.into_iter().take(CLAIMS_PER_ROUND) {
            let Some(pool_token) = grouped.get(&name).and_then(|p| my_pools.get(p)).copied() else {
                continue;
            };
            let pool_key = self.key("pools", &grouped[&name]);
            self.claim(client, name, Some((pool_key, pool_token)), mine)
                .await?;
        }
        Ok(())
    }

    /// Writes the live summaries of the sessions owned here that changed
    /// since last written, each under its fencing token (a stale owner's
    /// write fails) and with this node's lease (gone with the node). A
    /// failed write is tried again next round (a repeat is harmless).
    async fn publish(&mut self, client: &mut Client, mine: &BTreeMap<String, i64>) {
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
            let put = PutOptions::new().with_lease(self.lease);
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

    /// Claims session `name` for this node: its owner key is put with this
    /// node's lease only while it does not exist (and, for a member of a
    /// grouped pool, while `held` — the pool key and this node's token of
    /// it — still holds). A won claim's revision is the fencing token.
    /// An ambiguous failure (maybe claimed, maybe not) is not retried: the
    /// round ends (the next member is asked next), and the next round reads
    /// the owner key and decides from it.
    async fn claim(
        &mut self,
        client: &mut Client,
        name: String,
        held: Option<(String, i64)>,
        mine: &mut BTreeMap<String, i64>,
    ) -> anyhow::Result<()> {
        let key = self.key("owners", &name);
        let put = PutOptions::new().with_lease(self.lease);
        let mut when = vec![Compare::create_revision(key.as_str(), CompareOp::Equal, 0)];
        if let Some((pool_key, token)) = held {
            when.push(Compare::create_revision(pool_key, CompareOp::Equal, token));
        }
        let txn = Txn::new().when(when).and_then([TxnOp::put(
            key.as_str(),
            self.cfg.node.as_str(),
            Some(put),
        )]);
        match timeout(self.call_timeout(), client.txn(txn)).await {
            Ok(Ok(r)) if r.succeeded() => {
                let token = r.header().map_or(0, |h| h.revision());
                tracing::info!(session = name.as_str(), token, "fleet: claimed");
                self.fleet.metrics.claims.inc();
                mine.insert(name, token);
                Ok(())
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => anyhow::bail!("claim of {name}: {e}"),
            Err(_) => anyhow::bail!("claim of {name}: no answer"),
        }
    }

    /// Keys under `kind/`: name → (value, create revision, lease).
    async fn list(
        &self,
        client: &mut Client,
        kind: &str,
    ) -> anyhow::Result<BTreeMap<String, (String, i64, i64)>> {
        let prefix = self.key(kind, "");
        let got = timeout(
            self.call_timeout(),
            client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
        )
        .await??;
        let mut out = BTreeMap::new();
        for kv in got.kvs() {
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
