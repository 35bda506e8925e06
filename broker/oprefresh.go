package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
)

// opLeader is the leader's Open Platform work inside the one refresh path
// (refresher.fetch): what a component or authorizer call is made with (the
// latest verify ticket; the authorizer's refresh token or a fresh
// authorization code), what its answer stores besides the token (the
// rotated refresh token, sealed, and the registry entry, in the same fenced
// script), and what a refusal means (61023: recover the refresh token from
// api_get_authorizer_list, else needs_reauthorization).
type opLeader struct {
	*core
	cache *opCache
	wx    PlatformWeChat // nil without an Open Platform client

	sealMu  sync.Mutex
	sealKey string
	sealed  *sealer // of sealKey

	listMu sync.Mutex
	lists  map[string]*authorizerListing // "ns\tcomponent" → last listing
}

// authorizerListing is one reading of api_get_authorizer_list.
type authorizerListing struct {
	at     time.Time
	tokens map[string]string // authorizer → refresh token
}

// listingReuse is how long a listing answers further recoveries (a leader
// recovering many authorizers at term start lists once).
const listingReuse = 10 * time.Second

// pushAskInterval is the least time between two api_start_push_ticket
// calls for a component (shared by every leader through Redis).
const pushAskInterval = 10 * time.Minute

// errNotActive: the authorizer's registry entry is not active (revoked,
// needs re-authorization, or gone): no call is made.
var errNotActive = errors.New("broker: the authorizer is not active")

// isPlatform reports whether it is an Open Platform credential.
func isPlatform(it *item) bool {
	return it.kind == KindComponentToken || it.kind == KindAuthorizerToken
}

// prepare completes req for a component or authorizer call and returns the
// registry entry the answer's write also stores (authorizers).
func (o *opLeader) prepare(t *term, it *item, req *FetchRequest) (*azWrite, error) {
	seal, err := o.sealer()
	if err != nil {
		return nil, err
	}
	if o.wx == nil {
		return nil, errNoPlatformWeChat
	}
	ctx, cancel := context.WithTimeout(t.ctx, o.cfg.WeChat.Timeout)
	defer cancel()
	if it.kind == KindComponentToken {
		tk, at, ok := o.cache.ticket(it.ns, it.appid)
		if ok && !o.now().Before(at.Add(verifyTicketTTL)) {
			ok = false // past its 12 hours: WeChat refuses it (61005)
		}
		if !ok {
			var err error
			tk, at, ok, err = opStoreOf(o.store).opTicket(ctx, it.ns, it.appid)
			if err != nil {
				return nil, fmt.Errorf("read the verify ticket: %w", err)
			}
			if ok {
				o.cache.setTicket(it.ns, it.appid, tk, at)
			}
		}
		if !ok {
			o.askPush(t, it.ns, it.appid)
			return nil, errNoVerifyTicket
		}
		req.VerifyTicket = tk
		return nil, nil
	}
	req.Component = it.owner
	k := t.sched().task(it)
	// The usual refresh: an active authorizer with no newer grant pending,
	// refreshed with the refresh token of the record this replica holds
	// (the leader wrote it); no Redis read, and the registry entry stays as
	// it is. A stale one is refused (61023) and recovered (failed).
	if ce, ok := o.cache.entry(it.ns, it.owner, it.appid); ok && ce.State == StateActive && ce.Seed == "" &&
		(k == nil || !k.recoverFirst.Load()) {
		if r := it.cur.Load(); r != nil && r.Sealed != "" {
			if rt, err := seal.open(r.Sealed); err == nil {
				req.RefreshToken = rt
				return nil, nil
			}
		}
	}
	e, ok, err := opStoreOf(o.store).opAuthorizer(ctx, it.ns, it.owner, it.appid)
	if err != nil {
		return nil, fmt.Errorf("read authorizer %s: %w", it.appid, err)
	}
	if !ok || e.State != StateActive {
		return nil, errNotActive
	}
	az := &azWrite{comp: it.owner, authorizer: it.appid, expected: e.Seq,
		entry: azEntry{State: StateActive, Source: e.Source, AuthorizedAt: e.AuthorizedAt, Seq: e.Seq}}
	if sealed, ok := strings.CutPrefix(e.Seed, seedCode); ok {
		if req.AuthCode, err = seal.open(sealed); err == nil {
			return az, nil
		}
	}
	if sealed, ok := strings.CutPrefix(e.Seed, seedRefresh); ok {
		if req.RefreshToken, err = seal.open(sealed); err == nil {
			return az, nil
		}
	}
	if k == nil || !k.recoverFirst.Load() {
		raw, ok, err := o.store.record(ctx, it.ns, it.field)
		if err != nil {
			return nil, fmt.Errorf("read authorizer %s: %w", it.appid, err)
		}
		if r, perr := parseRecord(raw); ok && perr == nil && r.Sealed != "" {
			if req.RefreshToken, err = seal.open(r.Sealed); err == nil {
				return nil, nil // the entry stays as it is
			}
			o.log.Warn("stored refresh token cannot be decrypted; recovering it from api_get_authorizer_list",
				append(itemFields(it), zapErr(err))...)
		}
	}
	// Missing, unreadable, or possibly retired by a call whose answer was
	// lost: WeChat's list has the current one.
	since := time.Now().Add(-listingReuse)
	if k != nil && k.recoverFirst.Load() {
		since = t.lease.base // the lost call was a previous term's
	}
	rt, found, err := o.recover(t, it, since)
	if err != nil {
		return nil, err
	}
	if k != nil {
		k.recoverFirst.Store(false)
	}
	if !found {
		o.markReauth(t, it, e, "no refresh token stored and api_get_authorizer_list does not list the authorizer")
		return nil, errNotActive
	}
	o.log.Info("authorizer refresh token recovered from api_get_authorizer_list", itemFields(it)...)
	req.RefreshToken = rt
	az.entry.Source = SourceRecovered
	return az, nil
}

// sealRefresh is the record field of a refresh token WeChat answered.
func (o *opLeader) sealRefresh(got Fetched) (string, error) {
	seal, err := o.sealer()
	if err != nil {
		return "", err
	}
	return seal.seal(got.RefreshToken), nil
}

// sealer is the refresh-token cipher of the configuration now
// (open_platform.refresh_token_encryption_key; a reload may change it).
func (o *opLeader) sealer() (*sealer, error) {
	key, err := o.catalog().cfg.OpenPlatform.RefreshTokenKey()
	if err != nil {
		return nil, errors.New("broker: open_platform.refresh_token_encryption_key " + err.Error())
	}
	o.sealMu.Lock()
	defer o.sealMu.Unlock()
	if o.sealed == nil || o.sealKey != string(key) {
		s, err := newSealer(key)
		if err != nil {
			return nil, fmt.Errorf("broker: %w", err)
		}
		o.sealed, o.sealKey = s, string(key)
	}
	return o.sealed, nil
}

// failed acts on a refused component or authorizer call: an expired or
// invalid ticket asks WeChat to push again; a dead refresh token
// (61023) or authorization code is recovered from api_get_authorizer_list,
// and only when that has nothing newer is the authorizer marked
// needs_reauthorization (its refresh stops; the gauge pages).
func (o *opLeader) failed(t *term, it *item, req FetchRequest, err error) {
	refused := time.Now()
	var ae *wechat.APIError
	if !errors.As(err, &ae) || t.ctx.Err() != nil {
		return
	}
	if it.kind == KindComponentToken {
		if ae.Code == 61005 || ae.Code == 61006 {
			o.askPush(t, it.ns, it.appid)
		}
		return
	}
	if !ae.Reauthorize() {
		return
	}
	ctx, cancel := context.WithTimeout(t.ctx, o.cfg.WeChat.Timeout)
	e, ok, rerr := opStoreOf(o.store).opAuthorizer(ctx, it.ns, it.owner, it.appid)
	cancel()
	if rerr != nil || !ok || e.State != StateActive {
		return
	}
	rt, found, lerr := o.recover(t, it, refused)
	if lerr != nil {
		return // retried with backoff
	}
	seal, serr := o.sealer()
	if found && rt != req.RefreshToken && serr == nil {
		e.Seed = seedRefresh + seal.seal(rt)
		e.Source = SourceRecovered
		ctx, cancel := context.WithTimeout(t.ctx, o.cfg.WeChat.Timeout)
		_, werr := opStoreOf(o.store).opSetState(ctx, t.fence, it.ns, it.owner, it.appid, e.Seq, e)
		cancel()
		if werr != nil {
			o.rejected(t, it, werr)
			return
		}
		o.log.Warn("authorizer refresh token refused; a newer one recovered from api_get_authorizer_list",
			append(itemFields(it), zap.Int("errcode", ae.Code))...)
		return
	}
	o.markReauth(t, it, e, fmt.Sprintf("%d %s", ae.Code, ae.Msg))
}

// markReauth marks the authorizer needs_reauthorization (if its entry is
// still e): its refresh stops until an authorization event or an import.
func (o *opLeader) markReauth(t *term, it *item, e azEntry, reason string) {
	e.State, e.Seed, e.LastError = StateNeedsReauthorization, "", reason
	ctx, cancel := context.WithTimeout(t.ctx, o.cfg.WeChat.Timeout)
	defer cancel()
	if _, err := opStoreOf(o.store).opSetState(ctx, t.fence, it.ns, it.owner, it.appid, e.Seq, e); err != nil {
		o.rejected(t, it, err)
		return
	}
	o.log.Error("authorizer needs re-authorization: its refresh stopped; the merchant must authorize again (send a pre-authorization link) or a valid refresh token be imported",
		append(itemFields(it), zap.String("component_appid", it.owner), zap.String("reason", reason))...)
}

// rejected steps down after a fenced-out registry write.
func (o *opLeader) rejected(t *term, it *item, err error) {
	if errors.Is(err, errFenced) {
		o.m.FencedWritesRejected.Inc()
		o.log.Warn("fenced write rejected; stepping down", append(itemFields(it), zap.Int64("epoch", t.epoch))...)
		t.stop(errFenced)
	}
}

// recover looks the authorizer up in api_get_authorizer_list; a listing
// taken after since answers (one listing serves many recoveries).
func (o *opLeader) recover(t *term, it *item, since time.Time) (string, bool, error) {
	tokens, err := o.listing(t, it.ns, it.owner, since)
	if err != nil {
		return "", false, err
	}
	rt, ok := tokens[it.appid]
	return rt, ok, nil
}

// listing reads component comp's whole api_get_authorizer_list: authorizer
// → current refresh token. The last listing answers if it was taken after
// since (a listing from before a refresh token was retired would give the
// dead one back).
func (o *opLeader) listing(t *term, ns, comp string, since time.Time) (map[string]string, error) {
	ce, ok := o.catalog().component(ns, comp)
	if !ok {
		return nil, ErrUnknownComponent
	}
	ct := ce.app.token.cur.Load()
	if ct == nil || !o.now().Before(ct.ExpiresAt) {
		return nil, errNoAccessToken
	}
	key := ns + "\t" + comp
	o.listMu.Lock()
	defer o.listMu.Unlock()
	if l := o.lists[key]; l != nil && l.at.After(since) {
		return l.tokens, nil
	}
	l := &authorizerListing{at: time.Now(), tokens: map[string]string{}}
	for offset := 0; ; {
		if t.lease.remaining() <= o.cfg.WeChat.Timeout {
			return nil, errLeaseShort
		}
		ctx, cancel := context.WithTimeout(t.ctx, o.cfg.WeChat.Timeout)
		page, total, err := o.wx.AuthorizerList(ctx, ct.Value, comp, offset, wechat.MaxAuthorizerPage)
		cancel()
		if err != nil {
			code := -2
			var ae *wechat.APIError
			if errors.As(err, &ae) {
				code = ae.Code
			}
			o.m.WeChatErrors.WithLabelValues(ns, comp, wechat.APIGetAuthorizerList, metrics.ErrcodeLabel(code)).Inc()
			o.log.Warn("cannot list the component's authorizers (api_get_authorizer_list)", zapNS(ns),
				zap.String("component_appid", comp), zapErr(err))
			return nil, fmt.Errorf("list authorizers: %w", err)
		}
		for _, e := range page {
			l.tokens[e.AppID] = e.RefreshToken
		}
		offset += len(page)
		if len(page) == 0 || offset >= total {
			break
		}
	}
	if o.lists == nil {
		o.lists = map[string]*authorizerListing{}
	}
	o.lists[key] = l
	return l.tokens, nil
}

// sweepEvery is how often the leader compares a component's registry with
// api_get_authorizer_list (besides once per term).
const sweepEvery = 24 * time.Hour

// sweepLoop runs for term t: once per term and then daily, for every
// component whose token is valid, authorizers that WeChat lists and Redis
// holds no entry for (Redis lost its data) are recovered with the refresh
// token the list gives. It also warns, once per term, when Redis keeps no
// persistence: a restart would lose every refresh token.
func (o *opLeader) sweepLoop(t *term) {
	done := map[string]time.Time{}
	checked := false
	tk := time.NewTicker(o.reconcileEvery)
	defer tk.Stop()
	for {
		comps := o.catalog().comps
		if !checked && len(comps) > 0 {
			checked = true
			ctx, cancel := context.WithTimeout(t.ctx, o.cfg.WeChat.Timeout)
			persistent, known := opStoreOf(o.store).opPersistence(ctx)
			cancel()
			if known && !persistent {
				o.log.Warn("redis keeps no persistence (appendonly no, no save): a redis restart loses every authorizer refresh token; "+
					"the leader then recovers what api_get_authorizer_list still lists; turn on appendonly yes", zap.Int64("epoch", t.epoch))
			}
		}
		for ns, byComp := range comps {
			for comp, ce := range byComp {
				key := ns + "\t" + comp
				if at, ok := done[key]; ok && time.Since(at) < sweepEvery {
					continue
				}
				if r := ce.app.token.cur.Load(); r == nil || !o.now().Before(r.ExpiresAt) {
					continue
				}
				if err := o.sweep(t, ns, comp); err == nil {
					done[key] = time.Now()
				}
			}
		}
		select {
		case <-t.ctx.Done():
			return
		case <-tk.C:
		}
	}
}

// sweep recovers component comp's authorizers that api_get_authorizer_list
// lists and the registry does not hold.
func (o *opLeader) sweep(t *term, ns, comp string) error {
	tokens, err := o.listing(t, ns, comp, time.Now())
	if err != nil {
		return err
	}
	seal, err := o.sealer()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(t.ctx, o.cfg.Leader.LockTTL)
	defer cancel()
	st := opStoreOf(o.store)
	raw, err := st.opAuthorizers(ctx, ns, comp)
	if err != nil {
		return fmt.Errorf("read authorizers: %w", err)
	}
	n := 0
	for a, rt := range tokens {
		if _, known := raw[a]; known || !authorizerAppID.MatchString(a) || !validValue(rt) {
			continue
		}
		e := azEntry{State: StateActive, Source: SourceRecovered, AuthorizedAt: o.now(), Seed: seedRefresh + seal.seal(rt)}
		if _, err := st.opGrant(ctx, ns, comp, a, e); err != nil {
			return fmt.Errorf("store recovered authorizer %s: %w", a, err)
		}
		n++
	}
	if n > 0 {
		o.log.Warn("authorizers missing from redis recovered from api_get_authorizer_list", zapNS(ns),
			zap.String("component_appid", comp), zap.Int("recovered", n), zap.Int("listed", len(tokens)))
	}
	return nil
}

// askPush calls api_start_push_ticket for a component that has no valid
// ticket, at most once per pushAskInterval across leaders.
func (o *opLeader) askPush(t *term, ns, comp string) {
	ce, ok := o.catalog().component(ns, comp)
	if !ok || o.wx == nil {
		return
	}
	ctx, cancel := context.WithTimeout(t.ctx, o.cfg.WeChat.Timeout)
	defer cancel()
	first, err := opStoreOf(o.store).opFirst(ctx, o.store.keys.opPush(ns, comp), pushAskInterval)
	if err != nil || !first {
		return
	}
	err = o.wx.StartPushTicket(ctx, comp, ce.cfg.Secret.Reveal())
	if err != nil {
		o.log.Warn("api_start_push_ticket failed; no component token until WeChat pushes a verify ticket",
			zapNS(ns), zap.String("component_appid", comp), zapErr(err))
		return
	}
	o.log.Info("no valid verify ticket known: asked WeChat to push one (api_start_push_ticket)",
		zapNS(ns), zap.String("component_appid", comp))
}

// changed is told of an applied registry change or a new ticket (opCache):
// on the leader, an authorizer with a new grant and a component waiting for
// a ticket are due at once.
func (o *opLeader) changed(t *term, ns, comp, authorizer string) {
	s := t.sched()
	if s == nil {
		return
	}
	ce, ok := o.catalog().component(ns, comp)
	if !ok {
		return
	}
	if authorizer == "" {
		if r := ce.app.token.cur.Load(); r == nil || !o.now().Before(r.ExpiresAt) || s.isStopped(ce.app.token) {
			s.kick(ce.app.token)
		}
		return
	}
	if it := ce.auths[authorizer]; it != nil {
		if e, ok := o.cache.entry(ns, comp, authorizer); ok && e.Seed != "" {
			s.kick(it)
		}
	}
}
