package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
)

// Options configures a Broker. Config, Redis, WeChat, Logger and Metrics are
// required.
type Options struct {
	Config *config.Config // validated config (namespaces, refresh, leader, redis.key_prefix)
	Redis  RedisClient    // required; any go-redis client
	WeChat WeChat         // required
	// PlatformWeChat makes the Open Platform calls (component and
	// authorizer tokens, pre-authorization codes, the authorizer list).
	// nil: WeChat, when it has them (*wechat.Client does).
	PlatformWeChat PlatformWeChat
	Logger         *zap.Logger      // required
	Metrics        *metrics.Metrics // required
	Now            func() time.Time // nil: time.Now; token lifetimes and schedules follow it
	InstanceID     string           // default Config.InstanceID
}

// overlapDefault is how long WeChat keeps the previous classic token valid
// after a new fetch.
const overlapDefault = 300 * time.Second

// Broker is the token lifecycle of one replica: the facade over its rooms
// (docs/ARCHITECTURE.md). Each room is a type with its own methods; they
// share the core (configuration, store, clock, logger, metrics, catalog)
// and call each other one way only:
//
//	core ← exporter ← replica ← elector ← refresher (+ scheduler) ← reporter ← Broker
//
// replica: the cache every replica serves from (pub/sub, reconcile, pause
// guard, issued tokens); elector: the lease (election, epoch, lost lease);
// refresher: the leader's work (fetch, fenced save, intents, quota, the one
// refresh path of the scheduler and of reports); reporter: reports of a
// rejected token on any replica; exporter: per-credential metrics.
//
// Its methods are safe for concurrent use; Run may be called once.
type Broker struct {
	*core
	ex      *exporter
	rep     *replica
	el      *elector
	lead    *refresher
	rpt     *reporter
	op      *Platform
	running atomic.Bool
	// reloadMu serialises catalog changes: reloads, and the authorizer
	// set changing (opCache.swap).
	reloadMu sync.Mutex
}

// New checks opts and builds a Broker. It does not touch Redis; Run does.
//
// Options.Config must be a configuration that passed config.Validate (Load
// and Parse validate): the rules between settings, such as renew_interval
// below half of lock_ttl, are checked there and only there. New rejects only
// the durations it could not run with at all (timers and leases of zero or
// negative length).
func New(opts Options) (*Broker, error) {
	switch {
	case opts.Config == nil:
		return nil, errors.New("broker: Options.Config is required")
	case opts.Redis == nil:
		return nil, errors.New("broker: Options.Redis is required")
	case opts.WeChat == nil:
		return nil, errors.New("broker: Options.WeChat is required")
	case opts.Logger == nil:
		return nil, errors.New("broker: Options.Logger is required")
	case opts.Metrics == nil:
		return nil, errors.New("broker: Options.Metrics is required")
	}
	cfg := opts.Config
	if cfg.Leader.LockTTL <= 0 || cfg.Leader.RenewInterval <= 0 {
		return nil, fmt.Errorf("broker: leader.lock_ttl (%s) and leader.renew_interval (%s) must be positive: validate the configuration first (config.Validate)",
			cfg.Leader.LockTTL, cfg.Leader.RenewInterval)
	}
	if cfg.WeChat.Timeout <= 0 {
		return nil, fmt.Errorf("broker: wechat.timeout (%s) must be positive", cfg.WeChat.Timeout)
	}
	id := opts.InstanceID
	if id == "" {
		id = cfg.InstanceID
	}
	if id == "" {
		return nil, errors.New("broker: Options.InstanceID or Config.InstanceID is required")
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	c := &core{
		cfg:            cfg,
		log:            opts.Logger,
		m:              opts.Metrics,
		now:            now,
		id:             id,
		overlap:        overlapDefault,
		backoffMin:     time.Second,
		backoffMax:     5 * time.Minute,
		tick:           time.Second,
		reconcileEvery: cfg.Leader.LockTTL,
		pollEvery:      250 * time.Millisecond,
		verdictReuse:   verdictReuseDefault,
	}
	c.loss.base = time.Now()
	cat, err := newCatalog(cfg, nil)
	if err != nil {
		return nil, err
	}
	c.cat.Store(cat)
	c.store = newStore(opts.Redis, cfg.Redis.KeyPrefix, cat.namespaces, c.setRedis)
	b := &Broker{core: c, ex: &exporter{core: c}}
	b.rep = newReplica(c, b.ex)
	b.el = &elector{core: c, rep: b.rep}
	pw := opts.PlatformWeChat
	if pw == nil {
		pw, _ = platformOf(opts.WeChat)
	}
	wx := opts.WeChat
	if pw != nil {
		wx = bothWeChat{WeChat: opts.WeChat, PlatformWeChat: pw}
	}
	opc := newOpCache(c)
	opl := &opLeader{core: c, cache: opc, wx: pw}
	b.lead = &refresher{core: c, wx: wx, rep: b.rep, ex: b.ex, el: b.el, op: opl}
	work := &leaderWork{r: b.lead, fix: &restorer{core: c, rep: b.rep, r: b.lead}, ex: b.ex, el: b.el}
	b.el.work = work
	b.rpt = &reporter{core: c, rep: b.rep, lead: b.lead, el: b.el, waiters: map[string][]chan string{}}
	b.rep.handle = map[channel]func(string){
		chanInval:     b.lead.handleInvalRequest,
		chanInvalDone: b.rpt.handleInvalDone,
		chanResume:    b.handleResume,
		chanPlatform:  opc.handle,
	}
	b.op = &Platform{core: c, rep: b.rep, rpt: b.rpt, el: b.el, cache: opc, lead: opl}
	opc.swap = b.op.swapAuthorizers(&b.reloadMu)
	opc.leading = b.IsLeader
	for _, ref := range cfg.Components() {
		c.m.OpenPlatform.SeedComponent(ref.Namespace, ref.Component.AppID)
	}
	opc.changed = func(ns, comp, authorizer string) {
		if t := b.el.current(); t != nil {
			opl.changed(t, ns, comp, authorizer)
		}
	}
	b.rep.reconciled = work.repairIfLeading
	b.ex.seedMetrics(now(), cat.items)
	return b, nil
}

// configuredNamespaces lists the namespaces that have a config, in order.
func configuredNamespaces(cfg *config.Config) []string {
	var out []string
	for _, ns := range cfg.NamespaceNames() {
		if cfg.Namespaces[ns] != nil {
			out = append(out, ns)
		}
	}
	return out
}

// Run supervises the cache subscriber and periodic reconcile, leader election
// and (while leader) the refresh scheduler. It blocks until ctx is done, then
// stops every refresh, releases the lock and returns nil. Redis being down is
// not an error: Run keeps trying until ctx ends.
func (b *Broker) Run(ctx context.Context) error {
	if !b.running.CompareAndSwap(false, true) {
		return errors.New("broker: Run called twice")
	}
	b.log.Info("broker starting", zap.String("instance_id", b.id), zap.Int("items", len(b.catalog().items)))
	if err := b.op.cache.sync(ctx); err != nil && ctx.Err() == nil {
		b.log.Warn("initial load of the open platform state from redis failed", zap.Error(err))
	}
	if err := b.rep.reconcile(ctx); err != nil && ctx.Err() == nil {
		b.log.Warn("initial load from redis failed; serving nothing until redis answers", zap.Error(err))
	}
	var wg sync.WaitGroup
	wg.Go(func() { b.rep.heartbeat(ctx) })
	wg.Go(func() { b.rep.subscribe(ctx) })
	wg.Go(func() { b.rep.reconcileLoop(ctx) })
	wg.Go(func() { b.el.elect(ctx) })
	wg.Go(func() { b.dayMetricsLoop(ctx) })
	wg.Go(func() { b.op.cache.loop(ctx) })
	wg.Wait()
	b.log.Info("broker stopped", zap.String("instance_id", b.id))
	return nil
}

// AccessToken returns the current access token of appid in namespace ns from
// the in-process cache: no Redis round trip, and never an expired token nor
// one with less than a second left. It returns ErrUnknownApp for an app that
// is not configured and ErrNoToken when no valid token is cached.
func (b *Broker) AccessToken(ns, appid string) (Token, error) {
	e, ok := b.entry(ns, appid)
	if !ok {
		return Token{}, ErrUnknownApp
	}
	if err := b.rep.afterPause(); err != nil {
		return Token{}, err
	}
	r := e.token.cur.Load()
	if !servable(r, b.now()) {
		return Token{}, ErrNoToken
	}
	return Token{AccessToken: r.Value, ExpiresAt: r.ExpiresAt, Generation: r.Gen}, nil
}

// Ticket returns the current ticket of type typ ("jsapi" or "wx_card") from
// the in-process cache (never one with less than a second left). It returns
// ErrUnknownApp, ErrUnknownTicket for a type the app does not configure, or
// ErrNoToken when no valid ticket is cached.
func (b *Broker) Ticket(ns, appid, typ string) (Ticket, error) {
	e, ok := b.entry(ns, appid)
	if !ok {
		return Ticket{}, ErrUnknownApp
	}
	it, ok := e.tickets[typ]
	if !ok {
		return Ticket{}, ErrUnknownTicket
	}
	if err := b.rep.afterPause(); err != nil {
		return Ticket{}, err
	}
	r := it.cur.Load()
	if !servable(r, b.now()) {
		return Ticket{}, ErrNoToken
	}
	return Ticket{Ticket: r.Value, ExpiresAt: r.ExpiresAt}, nil
}

// AppByToken names the app whose current (still valid) access token this is:
// the current token, or the previous one within WeChat's overlap after it was
// replaced. It is a cache lookup.
func (b *Broker) AppByToken(accessToken string) (ns, appid string, ok bool) {
	it := b.rep.index.lookup(accessToken)
	if it == nil || it.kind != KindAccessToken || !b.catalog().has(it) {
		return "", "", false
	}
	now := b.now()
	cur := it.cur.Load()
	if cur == nil {
		return "", "", false
	}
	if cur.Value == accessToken && now.Before(cur.ExpiresAt) {
		return it.ns, it.appid, true
	}
	if prev := it.prev.Load(); prev != nil && prev.Value == accessToken &&
		now.Before(prev.ExpiresAt) && now.Before(cur.FetchedAt.Add(b.overlap)) {
		return it.ns, it.appid, true
	}
	return "", "", false
}

// IsLeader reports whether this replica holds the leader lock right now.
func (b *Broker) IsLeader() bool { return b.el.current() != nil }

// Ready returns nil when this replica can serve valid tokens: at least one
// configured app has a servable access token in the cache (standbys included, and
// also while Redis is down). With no apps configured it is always ready.
func (b *Broker) Ready() error {
	items := b.catalog().items
	if len(items) == 0 {
		return nil
	}
	now := b.now()
	apps := 0
	for _, it := range items {
		if it.kind != KindAccessToken {
			continue
		}
		apps++
		if servable(it.cur.Load(), now) {
			return nil
		}
	}
	if apps == 0 {
		// Components only: a replica must be ready before it has a
		// component token, or WeChat's ticket push, which brings the
		// first one, might never reach a replica behind a readiness-gated
		// load balancer.
		return nil
	}
	if st := b.redisErr.Load(); st != nil && st.err != nil {
		return fmt.Errorf("broker: no valid access token cached, redis unavailable: %w", st.err)
	}
	return errors.New("broker: no valid access token cached yet")
}

// dayMetricsLoop resets the per-day counts at every UTC+8 midnight until ctx
// ends; a leader then reloads the new day's counts from Redis (in case a
// call was counted in between). It polls the (injectable) clock every tick.
func (b *Broker) dayMetricsLoop(ctx context.Context) {
	tk := time.NewTicker(b.tick)
	defer tk.Stop()
	today := day(b.now())
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		d := day(b.now())
		if d == today {
			continue
		}
		today = d
		b.ex.resetDayMetrics()
		if t := b.el.term.Load(); t != nil && t.ctx.Err() == nil {
			b.ex.loadQuotaGauges(t.ctx)
		}
	}
}

// IssuedTokenApp names the app an access token was handed out for, by any
// replica, as long as the token has not reached its own expiry, even when it
// was replaced (or killed by an outside fetch) since. Tokens this replica has
// seen are answered from memory; others cost one Redis GET, and tokens Redis
// does not know are remembered as unknown. It returns ok false for an unknown
// or expired token, and an error wrapping ErrTokenLookup when Redis could not
// be asked. It is safe for concurrent use.
func (b *Broker) IssuedTokenApp(ctx context.Context, tok string) (ns, appid string, ok bool, err error) {
	return b.rep.issuedApp(ctx, tok)
}
