//go:build chaos

package chaos

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/wxbroker/wxbroker/internal/redistest"
)

// single returns the redis: YAML for one redis-server.
func single(rs *redistest.Server) string {
	return fmt.Sprintf("{addrs: [%q], key_prefix: chaos}", rs.Addr)
}

// processLimit is the time without a leader allowed after a process or
// Sentinel fault: lock_ttl + 1 s.
func processLimit(tm timing) time.Duration { return tm.lockTTL + time.Second }

// TestLeaderSIGKILL kills the leader; a survivor must lead within
// lock_ttl + 1 s. The killed broker comes back as a standby.
func TestLeaderSIGKILL(t *testing.T) {
	rs := redistest.Start(t)
	d := newDeployment(t, defaultTiming, single(rs))
	d.up(3)
	for range 2 {
		l := d.leader(10 * time.Second)
		d.rec.waitReads(t, 60)
		d.kill(l)
		if d.awaitLeader(3*d.tm.lockTTL) == nil {
			break
		}
		d.rec.waitReads(t, 60)
		d.restart(l)
	}
	d.refreshBoth()
	d.rec.finish(t, "leader SIGKILL x2 (single Redis)", processLimit(d.tm)).check(t)
}

// TestLeaderSIGSTOP stops the leader past its lease, then resumes it: it
// must step down without writing, and never lead alongside the new leader.
func TestLeaderSIGSTOP(t *testing.T) {
	rs := redistest.Start(t)
	d := newDeployment(t, defaultTiming, single(rs))
	d.up(3)
	l := d.leader(10 * time.Second)
	d.rec.waitReads(t, 60)
	d.stop(l)
	stopped := time.Now()
	d.awaitLeader(3 * d.tm.lockTTL)
	// The pause is the fault under test: twice the lock TTL.
	time.Sleep(time.Until(stopped.Add(2 * d.tm.lockTTL)))
	d.cont(l)
	d.refreshBoth()
	d.rec.finish(t, "leader SIGSTOP 2x lock_ttl (single Redis)", processLimit(d.tm)).check(t)
}

// heldCall queues a latency fault on the classic token API and waits until
// the leader's call has reached the simulator (the simulator holds the
// answer for latency). It returns the leader and the simulator's mint count
// before the call.
func heldCall(t *testing.T, d *deployment, latency time.Duration) (*broker, int) {
	t.Helper()
	d.sim.fault(t, apiToken, 1, map[string]any{"latency_ms": latency.Milliseconds()})
	calls := d.sim.calls(t, apiToken, appClassic)
	minted := d.sim.minted(t, appClassic)
	d.waitCall(apiToken, appClassic, calls, tokenTTL+5*time.Second)
	l := d.leader(time.Second)
	d.rec.note("classic token call held by the simulator")
	return l, minted
}

// TestLeaderSIGKILLDuringCall kills the leader while WeChat holds its
// classic token call: the call is lost with the process (the simulator
// mints nothing once the connection closes). The new leader must know
// that a call was made and not trust the stored token.
func TestLeaderSIGKILLDuringCall(t *testing.T) {
	rs := redistest.Start(t)
	d := newDeployment(t, defaultTiming, single(rs))
	d.up(3)
	l, _ := heldCall(t, d, time.Second)
	d.kill(l)
	d.rec.unavoidable(appClassic, 1) // the call that died with the leader
	d.awaitLeader(3 * d.tm.lockTTL)
	d.rec.waitReads(t, 300)
	d.rec.finish(t, "leader SIGKILL during a classic credential call", processLimit(d.tm)).check(t)
}

// TestLeaderSIGSTOPDuringCall stops the leader while WeChat holds its
// classic token call. WeChat then mints T2 (T1 dies after the overlap) but
// T2 never reaches Redis: the new leader must supersede T1 before it dies.
func TestLeaderSIGSTOPDuringCall(t *testing.T) {
	rs := redistest.Start(t)
	d := newDeployment(t, defaultTiming, single(rs))
	d.up(3)
	l, minted := heldCall(t, d, time.Second)
	d.stop(l)
	stopped := time.Now()
	d.rec.unavoidable(appClassic, 1) // T2, minted for a stopped process
	waitFor(t, "WeChat to mint the held token", 5*time.Second, func() bool { return d.sim.minted(t, appClassic) > minted })
	d.awaitLeader(3 * d.tm.lockTTL)
	time.Sleep(time.Until(stopped.Add(2*d.tm.lockTTL + overlap)))
	d.cont(l)
	d.rec.waitReads(t, 300)
	d.rec.finish(t, "leader SIGSTOP during a classic credential call", processLimit(d.tm)).check(t)
}

// TestLeaderSIGSTOPDuringReportedCall: a client reports the current classic
// token T1 (as after a 40001), so the leader fetches off its schedule; the
// simulator holds that call and the leader is stopped meanwhile. WeChat
// mints T2, T1 dies after the overlap, T2 never reaches Redis, and T1 still
// has most of its life left, so the new leader's schedule would not replace
// it before it dies: only knowing that a call was made can. A report of T1
// after its death must then be answered with a new token, not 429.
func TestLeaderSIGSTOPDuringReportedCall(t *testing.T) {
	rs := redistest.Start(t)
	d := newDeployment(t, defaultTiming, single(rs))
	d.up(3)
	// Start from a fresh T1, so that its scheduled refresh is far away.
	seen := d.rec.seen(appClassic)
	waitFor(t, "a fresh classic token", tokenTTL+10*time.Second, func() bool { return d.rec.seen(appClassic) > seen })
	l := d.leader(10 * time.Second)
	t1 := d.current(l, appClassic)
	d.sim.fault(t, apiToken, 1, map[string]any{"latency_ms": time.Second.Milliseconds()})
	// The broker checks a report with WeChat before it forces a fetch; the
	// check answers 40001 here, as for a token another process killed.
	d.sim.fault(t, "get_api_domain_ip", 1, map[string]any{"errcode": 40001})
	calls := d.sim.calls(t, apiToken, appClassic)
	minted := d.sim.minted(t, appClassic)
	go d.report(l, appClassic, t1) // answered late or never: its leader is stopped
	d.waitCall(apiToken, appClassic, calls, 10*time.Second)
	d.stop(l)
	stopped := time.Now()
	d.rec.unavoidable(appClassic, 1) // T2, minted for a stopped process
	waitFor(t, "WeChat to mint the held token", 5*time.Second, func() bool { return d.sim.minted(t, appClassic) > minted })
	mintedAt := time.Now()
	nl := d.awaitLeader(3 * d.tm.lockTTL)
	// T1 is dead once the overlap has passed. Readers keep reading for 2 s
	// more, which shows whether the brokers replaced it on their own; then
	// a client that met 40001 reports it.
	time.Sleep(time.Until(mintedAt.Add(overlap + 2*time.Second)))
	if nl != nil {
		code, body := d.report(nl, appClassic, t1)
		d.rec.note(fmt.Sprintf("report of the dead T1 to %s: %d", nl.name, code))
		if code != 200 {
			t.Errorf("report of a token WeChat rejects, after the leader died mid-call: %d %s; want 200 with a new token", code, body)
		}
	}
	time.Sleep(time.Until(stopped.Add(2*d.tm.lockTTL + overlap)))
	d.cont(l)
	d.refreshBoth()
	d.rec.finish(t, "leader SIGSTOP during a reported (off-schedule) classic call", processLimit(d.tm)).check(t)
}

// TestLeaderKilledBeforeWrite: WeChat answers the leader's classic call
// (minting T2, which supersedes T1 after the overlap) while Redis refuses
// writes (CLIENT PAUSE WRITE), then the leader is killed before its write
// lands.
func TestLeaderKilledBeforeWrite(t *testing.T) {
	rs := redistest.Start(t)
	d := newDeployment(t, defaultTiming, single(rs))
	d.up(3)
	rc := rs.Client(t)
	ctx := t.Context()
	l, minted := heldCall(t, d, 500*time.Millisecond)
	if err := rc.Do(ctx, "CLIENT", "PAUSE", "5000", "WRITE").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	d.rec.note("CLIENT PAUSE 5000 WRITE")
	waitFor(t, "WeChat to mint the held token", 5*time.Second, func() bool { return d.sim.minted(t, appClassic) > minted })
	// The answer is on its way to the leader, whose write now waits on the
	// paused Redis; give it a moment to get there, then kill it.
	time.Sleep(200 * time.Millisecond)
	d.kill(l)
	d.rec.unavoidable(appClassic, 1) // T2, never written
	if err := rc.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
		t.Fatalf("CLIENT UNPAUSE: %v", err)
	}
	d.rec.note("CLIENT UNPAUSE")
	d.awaitLeader(3 * d.tm.lockTTL)
	d.rec.waitReads(t, 300)
	d.rec.finish(t, "leader killed between WeChat's answer and the Redis write", processLimit(d.tm)).check(t)
}

// TestRedisRestart crashes a non-persistent redis-server and starts it
// again empty: the brokers must rewrite their state, keep serving valid
// tokens, and the epoch must not start again at 1.
func TestRedisRestart(t *testing.T) {
	rs := redistest.Start(t)
	d := newDeployment(t, defaultTiming, single(rs))
	d.up(3)
	d.rec.waitReads(t, 60)
	for range 2 {
		d.rec.note("redis SIGKILL")
		rs.Kill()
		rs.Start()
		d.rec.note("redis started again, empty")
		d.awaitLeader(3 * d.tm.lockTTL)
		d.rec.waitReads(t, 300)
	}
	d.refreshBoth()
	d.rec.finish(t, "non-persistent Redis restart x2", processLimit(d.tm)).check(t)
}

// TestWeChatFaults queues 5xx, -1, timeouts, dropped connections and
// dropped answers on both credential APIs; the brokers must retry in time
// and never serve a dead token or expires_in 0.
func TestWeChatFaults(t *testing.T) {
	rs := redistest.Start(t)
	d := newDeployment(t, defaultTiming, single(rs))
	d.up(3)
	timeout := (d.tm.wechatTimeout + 500*time.Millisecond).Milliseconds()
	faults := []map[string]any{
		{"status": 502}, {"errcode": -1}, {"latency_ms": timeout}, {"drop": true}, {"status": 503}, {"drop_response": true},
	}
	for app, api := range appAPI {
		from := d.sim.calls(t, api, app)
		for _, f := range faults {
			d.sim.fault(t, api, 1, f)
		}
		d.rec.unavoidable(app, len(faults))
		d.rec.note(fmt.Sprintf("%d faults queued on %s", len(faults), api))
		// Every fault is consumed by a call, then one more call succeeds.
		// Six failures in a row outlive a 20 s token; once it has expired
		// the retries follow the plain exponential backoff (1 s doubling,
		// ±20 %), so the seventh call may come about 75 s after the first.
		if !waitUntil(6*tokenTTL, func() bool { return d.sim.calls(t, api, app) > from+len(faults) }) {
			t.Errorf("%s: %d calls after %s; want %d faulted calls and a successful one", api, d.sim.calls(t, api, app)-from, 6*tokenTTL, len(faults))
		}
	}
	d.rec.waitReads(t, 300)
	d.rec.finish(t, "WeChat faults: 5xx, -1, timeout, drop, dropped answer", processLimit(d.tm)).check(t)
}

// TestManyLeaderKills kills the leader 50 times in a row with a 1 s lock.
func TestManyLeaderKills(t *testing.T) {
	tm := timing{lockTTL: time.Second, renew: 300 * time.Millisecond, wechatTimeout: 500 * time.Millisecond}
	rs := redistest.Start(t)
	d := newDeployment(t, tm, single(rs))
	d.up(3)
	for i := range 50 {
		l := d.leader(10 * time.Second)
		d.kill(l)
		if d.awaitLeader(5*tm.lockTTL) == nil {
			break
		}
		d.restart(l)
		if i%10 == 9 {
			t.Logf("%d leader kills", i+1)
		}
	}
	d.rec.waitReads(t, 100)
	d.rec.finish(t, "50 leader SIGKILLs in a row (lock_ttl 1s)", processLimit(tm)).check(t)
}

// sentinelSetup starts a master, a replica and a sentinel watching them.
func sentinelSetup(t *testing.T) (master, replica *redistest.Server, redisYAML string, switched func() bool) {
	master = redistest.Start(t)
	host, port, _ := net.SplitHostPort(master.Addr)
	replica = redistest.Start(t, "--replicaof", host, port)
	waitFor(t, "the replica to sync", 20*time.Second, func() bool {
		info, err := replica.Client(t).Info(t.Context(), "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	s := redistest.StartSentinel(t, master, "chaos")
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { _ = sc.Close() })
	waitFor(t, "the sentinel to know the replica", 20*time.Second, func() bool {
		r, err := sc.Replicas(t.Context(), "chaos").Result()
		return err == nil && len(r) == 1
	})
	switched = func() bool {
		a, err := sc.GetMasterAddrByName(t.Context(), "chaos").Result()
		return err == nil && len(a) == 2 && net.JoinHostPort(a[0], a[1]) == replica.Addr
	}
	return master, replica, fmt.Sprintf("{addrs: [%q], master_name: chaos, key_prefix: chaos}", s.Addr), switched
}

// TestSentinelMasterKill kills the Redis master; Sentinel promotes the
// replica and the brokers follow.
func TestSentinelMasterKill(t *testing.T) {
	master, _, y, switched := sentinelSetup(t)
	d := newDeployment(t, defaultTiming, y)
	d.up(3)
	d.rec.waitReads(t, 60)
	d.rec.note("master SIGKILL")
	master.Kill()
	waitFor(t, "Sentinel to promote the replica", 30*time.Second, switched)
	d.rec.note("Sentinel promoted the replica")
	d.awaitLeader(10 * time.Second)
	d.refreshBoth()
	d.rec.finish(t, "Sentinel: master SIGKILL, failover", processLimit(d.tm)).check(t)
}

// TestSentinelMasterPause stops the master long enough for a failover,
// then resumes it: it comes back as a master and is demoted.
func TestSentinelMasterPause(t *testing.T) {
	master, _, y, switched := sentinelSetup(t)
	d := newDeployment(t, defaultTiming, y)
	d.up(3)
	d.rec.waitReads(t, 60)
	d.rec.note("master SIGSTOP")
	master.Pause()
	waitFor(t, "Sentinel to promote the replica", 30*time.Second, switched)
	d.rec.note("Sentinel promoted the replica")
	time.Sleep(time.Second) // the old master stays paused a little longer: the fault under test
	master.Resume()
	d.rec.note("master SIGCONT")
	d.awaitLeader(10 * time.Second)
	d.refreshBoth()
	d.rec.finish(t, "Sentinel: master SIGSTOP until failover + 1s, old master back", processLimit(d.tm)).check(t)
}

// TestSentinelLostWrite: the replica is stopped while the leader writes a
// new classic token T2, then the master dies and Sentinel promotes the
// replica, which still holds T1 (dead after the overlap). A broker started
// after the failover must not serve T1.
func TestSentinelLostWrite(t *testing.T) {
	master, replica, y, switched := sentinelSetup(t)
	d := newDeployment(t, defaultTiming, y)
	d.up(3)
	d.rec.note("replica SIGSTOP")
	replica.Pause()
	seen := d.rec.seen(appClassic)
	waitFor(t, "a new classic token written and served", tokenTTL+10*time.Second, func() bool { return d.rec.seen(appClassic) > seen })
	d.rec.note("new classic token served; master SIGKILL, replica SIGCONT")
	master.Kill()
	replica.Resume()
	waitFor(t, "Sentinel to promote the replica", 30*time.Second, switched)
	d.rec.note("Sentinel promoted the replica")
	d.awaitLeader(15 * time.Second)
	d.rec.note("starting a fourth broker")
	d.addBroker()
	d.refreshBoth()
	d.rec.finish(t, "Sentinel: failover that loses the last token write", processLimit(d.tm)).check(t)
}

const clusterNodeTimeout = time.Second

// TestClusterSlotMasterKill kills the cluster master that owns the slot of
// the brokers' {key_prefix} hash tag.
func TestClusterSlotMasterKill(t *testing.T) {
	nodes := make([]*redistest.Server, 6)
	var addrs []string
	for i := range nodes {
		nodes[i] = redistest.Start(t, "--cluster-enabled", "yes",
			"--cluster-node-timeout", strconv.Itoa(int(clusterNodeTimeout.Milliseconds())),
			"--cluster-port", strconv.Itoa(redistest.FreePort(t)),
			// Replicas must finish their first sync before a failover can
			// promote them; the default waits 5 s for more replicas.
			"--repl-diskless-sync-delay", "0")
		addrs = append(addrs, nodes[i].Addr)
	}
	redisCLI(t, append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "1", "--cluster-yes")...)
	ctx := t.Context()
	for _, n := range nodes {
		waitFor(t, n.Addr+" cluster_state:ok", 30*time.Second, func() bool {
			info, err := n.Client(t).ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		})
	}
	for _, n := range nodes {
		waitFor(t, n.Addr+" synced, if a replica", 30*time.Second, func() bool {
			info, err := n.Client(t).Info(ctx, "replication").Result()
			return err == nil && (strings.Contains(info, "role:master") || strings.Contains(info, "master_link_status:up"))
		})
	}
	quoted := make([]string, len(addrs))
	for i, a := range addrs {
		quoted[i] = strconv.Quote(a)
	}
	d := newDeployment(t, defaultTiming, fmt.Sprintf("{addrs: [%s], key_prefix: chaos}", strings.Join(quoted, ", ")))
	d.up(3)
	d.rec.waitReads(t, 60)
	victim := slotMaster(ctx, t, nodes, "{chaos}")
	d.rec.note("slot master " + victim.Addr + " SIGKILL")
	victim.Kill()
	var survivor *redistest.Server
	for _, n := range nodes {
		if n != victim {
			survivor = n
			break
		}
	}
	if !waitUntil(30*time.Second, func() bool {
		m := slotMasterAddr(ctx, survivor.Client(t), "{chaos}")
		return m != "" && m != victim.Addr
	}) {
		nodes, _ := survivor.Client(t).ClusterNodes(ctx).Result()
		t.Fatalf("the cluster did not promote a replica for the slot within 30s; CLUSTER NODES:\n%s", nodes)
	}
	d.rec.note("the cluster promoted a replica")
	d.awaitLeader(90 * time.Second)
	d.refreshBoth()
	d.rec.finish(t, "Cluster: SIGKILL of the {key_prefix} slot master", clusterNodeTimeout+d.tm.lockTTL+time.Second).check(t)
}

// slotMaster returns the node that masters key's slot.
func slotMaster(ctx context.Context, t *testing.T, nodes []*redistest.Server, key string) *redistest.Server {
	t.Helper()
	addr := slotMasterAddr(ctx, nodes[0].Client(t), key)
	for _, n := range nodes {
		if n.Addr == addr {
			return n
		}
	}
	t.Fatalf("no master known for the slot of %s (got %q)", key, addr)
	return nil
}

// slotMasterAddr asks one node which node masters key's slot; "" when it
// cannot tell.
func slotMasterAddr(ctx context.Context, c *redis.Client, key string) string {
	slot, err := c.ClusterKeySlot(ctx, key).Result()
	if err != nil {
		return ""
	}
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return ""
	}
	for _, s := range slots {
		if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
			return s.Nodes[0].Addr
		}
	}
	return ""
}

// waitUntil polls cond every 20 ms until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// refreshBoth lets the deployment run until each app has had one more
// credential call that minted a token the readers then saw, so that every
// scenario also covers a refresh after its fault.
func (d *deployment) refreshBoth() {
	d.t.Helper()
	for _, app := range []string{appClassic, appStable} {
		seen := d.rec.seen(app)
		if !waitUntil(tokenTTL+10*time.Second, func() bool { return d.rec.seen(app) > seen }) {
			d.t.Errorf("%s: no new token served within %s", app, tokenTTL+10*time.Second)
		}
	}
	d.rec.waitReads(d.t, 100)
}
