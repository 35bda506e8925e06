package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/config"
)

// reporter takes reports of a rejected token on any replica: on the leader
// it runs the conditional refresh, elsewhere it forwards the report to the
// leader through Redis and waits for the new token. Reports of one token on
// one replica share one forward.
type reporter struct {
	*core
	rep     *replica
	lead    *refresher
	el      *elector
	waitMu  sync.Mutex
	waiters map[string][]chan string // invalidation outcomes by ns\tappid\tfailed
}

// Outcomes the leader publishes on {p}:inval:done for forwarded reports.
const (
	outcomeOK      = "ok"
	outcomeLimited = "limited"
	outcomeError   = "error"
	// outcomeAccepted: WeChat still accepts the reported token.
	outcomeAccepted = "accepted"
	// outcomeUnconfirmed: a MustConfirm report the check could not decide.
	outcomeUnconfirmed = "unconfirmed"
)

// Proof says how far a failure report is trusted (Report.Proof).
type Proof int

const (
	// Proven is a report that carries WeChat's own answer: it is trusted
	// (Invalidate).
	Proven Proof = iota
	// Unproven is a report whose token is checked with WeChat first; a
	// check that cannot decide trusts the report (InvalidateUnproven).
	Unproven
	// MustConfirm is a report whose token is checked with WeChat first and
	// replaced only when WeChat rejects it; a check that cannot decide
	// refuses the report with ErrNotConfirmed. For reporters that may not
	// spend the force budget on their own word.
	MustConfirm
)

// Report is a failure report: Token met 40001/42001/40014 (ReportFailure).
// The zero value is a proven report by a client.
type Report struct {
	Token  string // the token that failed
	Source string // metrics.SourceClient (the default), SourceLogin, SourceProxy, SourceBroker or SourceCompat
	Proof  Proof
	// Charge, if set, is called at most once, at the moment the report is
	// about to cost WeChat a call: the check of the token or the forced
	// fetch on the leader, or, on a follower, the hand-over of the report
	// to the leader. It is not called for a report that names a token that
	// is no longer current, joins a report of the same token in progress
	// (on this replica, or on the leader) or is answered by a fresh "still
	// accepted" verdict: those cost WeChat nothing. An error from Charge
	// refuses the report before anything is spent; ReportFailure returns it
	// wrapped. Charge runs with the broker's locks for the token held: it
	// must be quick and must not call the broker (a rate limiter's Allow).
	Charge func() error
}

// ErrNotConfirmed answers a MustConfirm report when the check with WeChat
// could not tell whether the token failed: nothing was refreshed.
var ErrNotConfirmed = errors.New("broker: wechat did not confirm that the reported token failed")

// claim is one report on its way through the broker.
type claim struct {
	failed string
	proof  Proof
	since  time.Time    // when the report was made (time.Now), for verdict reuse
	charge func() error // Report.Charge; nil once called, or for a free report
}

func newClaim(r Report, since time.Time) *claim {
	return &claim{failed: r.Token, proof: r.Proof, since: since, charge: r.Charge}
}

// pay calls the claim's Charge once: the report is about to cost WeChat a
// call.
func (c *claim) pay() error {
	if c.charge == nil {
		return nil
	}
	charge := c.charge
	c.charge = nil
	if err := charge(); err != nil {
		return fmt.Errorf("%w: %w", errRefused, err)
	}
	return nil
}

// errRefused marks a report its Charge refused.
var errRefused = errors.New("broker: report refused")

// verify reports whether the claim's token is checked with WeChat first.
func (c *claim) verify() bool { return c.proof != Proven }

// conditionalRefresh replaces c's token if it is still current (after
// checking it with WeChat unless the report is proven) and returns the
// token to use next. accepted reports that WeChat still accepted the
// token: tok is then the current token, the reported one unless it was
// replaced meanwhile.
func (b *reporter) conditionalRefresh(ctx context.Context, it *item, c *claim) (tok Token, accepted bool, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, invalidateWait(b.cfg))
		defer cancel()
	}
	failed := c.failed
	if c.verify() && stillAccepted(it, failed, c.since, b.verdictReuse) {
		tok, err = b.rep.current(it)
		return tok, true, err
	}
	if cur := it.cur.Load(); cur != nil && cur.Value != failed {
		// A stale report, or one about a token newer than this replica has
		// seen: catch up with Redis once and answer with the current token.
		if p := it.prev.Load(); p == nil || p.Value != failed {
			_ = b.rep.refreshItem(ctx, it)
		}
		tok, err = b.rep.currentExcept(it, failed)
		return tok, false, err
	}
	if t := b.el.term.Load(); t != nil && t.ctx.Err() == nil {
		_, err := b.lead.refreshIfCurrent(ctx, t, it, c)
		switch {
		case err == nil:
			tok, err = b.rep.currentExcept(it, failed)
			return tok, false, err
		case errors.Is(err, errStillAccepted):
			tok, err = b.rep.current(it)
			return tok, true, err
		case errors.Is(err, ErrForceLimited), errors.Is(err, ErrNotConfirmed), errors.Is(err, errRefused):
			return Token{}, false, err
		case t.ctx.Err() == nil || ctx.Err() != nil:
			return Token{}, false, fmt.Errorf("%w: %w", ErrNoToken, err)
		}
		// The term ended under us: wait for the next leader like a follower.
	}
	return b.followInvalidate(ctx, it, c)
}

// invalidateWait bounds a follower's wait when the caller set no deadline:
// a normal and a forced call, and a leader takeover.
func invalidateWait(cfg *config.Config) time.Duration {
	return 2*cfg.WeChat.Timeout + cfg.Leader.LockTTL
}

// current returns the cached token unless it is (nearly) expired.
func (b *replica) current(it *item) (Token, error) {
	cur := it.cur.Load()
	if !servable(cur, b.now()) {
		return Token{}, ErrNoToken
	}
	return Token{AccessToken: cur.Value, ExpiresAt: cur.ExpiresAt, Generation: cur.Gen}, nil
}

// currentExcept returns the cached token unless it is failed or (nearly)
// expired.
func (b *replica) currentExcept(it *item, failed string) (Token, error) {
	cur := it.cur.Load()
	if !servable(cur, b.now()) || cur.Value == failed {
		return Token{}, ErrNoToken
	}
	return Token{AccessToken: cur.Value, ExpiresAt: cur.ExpiresAt, Generation: cur.Gen}, nil
}

// refreshIfCurrent is the conditional refresh on the leader, the one path
// for a token WeChat rejected: invalidation reports (conditionalRefresh,
// handleInvalRequest) and fetch's retry of a dependent kind call it. It
// refreshes only if c's token is still the current token, one refresh at a
// time per credential (the scheduler's task lock), through the same fetch,
// write path and bookkeeping (conclude) as a scheduled refresh, so
// that concurrent reports of it queue here and find it replaced (or
// answered by the verdict) when their turn comes. Unless the report is
// proven, it first checks the token with WeChat (errStillAccepted when
// WeChat accepts it; a verdict reached after the report was made answers
// without a new check). c is charged just before the check or the fetch.
// A kind whose plain call mints a new value is forced at once (counted
// against the force budget); a rotating kind (stable token) first makes a
// plain call and forces only if WeChat hands back the failed value.
func (b *refresher) refreshIfCurrent(ctx context.Context, t *term, it *item, c *claim) (*record, error) {
	k := t.sched().task(it)
	if k == nil {
		return nil, ErrUnknownApp // removed by a reload meanwhile
	}
	if !k.acquire(ctx) {
		return nil, fmt.Errorf("wait for the refresh in progress: %w", context.Cause(ctx))
	}
	defer k.release()
	failed := c.failed
	cur := it.cur.Load()
	if cur == nil || cur.Value != failed {
		return cur, nil // already replaced: nothing to do
	}
	if c.verify() && stillAccepted(it, failed, c.since, b.verdictReuse) {
		return nil, errStillAccepted
	}
	if err := c.pay(); err != nil {
		return nil, err
	}
	if c.verify() {
		if err := b.verifyReport(ctx, k, failed, c.proof == MustConfirm); err != nil {
			return nil, err
		}
	}
	now := b.now()
	b.detectExternalInvalidation(k, cur, failed, now)
	began := time.Now()
	var rec *record
	var err error
	if !it.spec().Rotating() {
		rec, err = b.fetch(t, it, callForced)
	} else {
		// If no forced refresh is allowed, a normal-mode call only helps
		// inside the rotation window; don't spend quota otherwise.
		pctx, cancel := context.WithTimeout(ctx, b.cfg.WeChat.Timeout)
		_, err = b.preCall(pctx, t.fence, it, it.spec().API(), callForceCheck)
		cancel()
		if err != nil && (!errors.Is(err, ErrForceLimited) || cur.ExpiresAt.Sub(now) > b.cfg.Refresh.StableRotationWindow) {
			b.rejected(t, it, err)
			return nil, err
		}
		rec, err = b.fetch(t, it, callPlain)
		if err == nil && rec.Value == failed {
			rec, err = b.fetch(t, it, callForced)
			if err == nil && rec.Value == failed {
				err = fmt.Errorf("%w: wechat returned the failed token to a forced refresh", ErrForceLimited)
			}
		}
	}
	if t.ctx.Err() != nil {
		return rec, err // the next leader takes over from Redis
	}
	if o := b.conclude(t, k, began, rec, err); o.err != nil {
		if !errors.Is(o.err, ErrForceLimited) && !errors.Is(o.err, errLeaseShort) {
			b.log.Warn("conditional refresh failed", append(itemFields(it), zapErr(o.err))...)
		}
		return nil, o.err
	}
	return rec, nil
}

// detectExternalInvalidation counts and logs (once per token) a current
// token that failed before its expiry: this broker did not replace it, so
// someone outside fetched a token for this AppID. The caller holds k's lock
// and has checked that failed is it's current record cur.
func (b *refresher) detectExternalInvalidation(k *task, cur *record, failed string, now time.Time) bool {
	if !now.Before(cur.ExpiresAt) || k.external == failed {
		return false
	}
	it := k.it
	k.external = failed
	b.m.ExternalInvalidation.WithLabelValues(it.ns, it.label()).Inc()
	b.log.Warn("access token invalidated outside the broker: another process fetched a token with this appid",
		append(itemFields(it), zapTok(failed), zap.Duration("expires_in", cur.ExpiresAt.Sub(now)))...)
	return true
}

// followInvalidate hands a report to the leader through Redis and waits until
// this replica's cache holds a token other than c's, or the leader answers
// that WeChat still accepts it (accepted).
func (b *reporter) followInvalidate(ctx context.Context, it *item, c *claim) (Token, bool, error) {
	failed := c.failed
	payload := invalPayload(it, failed, c.proof)
	done, first, err := b.addWaiter(payload, c)
	if err != nil {
		return Token{}, false, err
	}
	defer b.removeWaiter(payload, done)
	if first {
		// Later reports of the same token on this replica wait for this
		// forward's outcome (it wakes every waiter of the payload), so a
		// burst costs the leader one report per replica.
		b.forward(ctx, payload)
	}
	tk := time.NewTicker(b.pollEvery)
	defer tk.Stop()
	polls := 0
	for {
		changed := it.changes()
		if tok, err := b.rep.currentExcept(it, failed); err == nil {
			return tok, false, nil
		}
		select {
		case <-changed:
		case res := <-done:
			switch res {
			case outcomeLimited:
				return Token{}, false, ErrForceLimited
			case outcomeUnconfirmed:
				return Token{}, false, ErrNotConfirmed
			case outcomeAccepted:
				tok, err := b.rep.current(it)
				return tok, true, err
			case outcomeError:
				_ = b.rep.refreshItem(ctx, it)
				if tok, err := b.rep.currentExcept(it, failed); err == nil {
					return tok, false, nil
				}
				return Token{}, false, fmt.Errorf("%w: the leader's refresh failed", ErrNoToken)
			default:
				_ = b.rep.refreshItem(ctx, it)
			}
		case <-tk.C:
			if c.verify() && stillAccepted(it, failed, c.since, b.verdictReuse) {
				// Another waiter's outcome, published before this one
				// registered, answered for this report too.
				tok, err := b.rep.current(it)
				return tok, true, err
			}
			_ = b.rep.refreshItem(ctx, it)
			if polls++; polls%4 == 0 {
				b.forward(ctx, payload) // the leader may have changed meanwhile
			}
		case <-ctx.Done():
			return Token{}, false, fmt.Errorf("%w: waiting for the leader's refresh: %w", ErrNoToken, ctx.Err())
		}
	}
}

// invalPayload is a forwarded report on {p}:inval: "ns\tappid\ttoken", plus
// "\tverify" for a report to check with WeChat first (Unproven), or
// "\tconfirm" for one to refresh only when the check confirms it
// (MustConfirm). Tokens never hold a tab (validValue). It also keys the
// report's waiters and its outcome.
func invalPayload(it *item, failed string, proof Proof) string {
	ref := it.appid
	if it.kind != KindAccessToken {
		ref = it.field // an Open Platform credential: its record field
	}
	p := it.ns + "\t" + ref + "\t" + failed
	switch proof {
	case Unproven:
		p += "\t" + verifyFlag
	case MustConfirm:
		p += "\t" + confirmFlag
	}
	return p
}

const (
	verifyFlag  = "verify"
	confirmFlag = "confirm"
)

// proofOf is the Proof a forwarded report's flag names.
func proofOf(flag string) Proof {
	switch flag {
	case verifyFlag:
		return Unproven
	case confirmFlag:
		return MustConfirm
	}
	return Proven
}

// forward publishes a report (invalPayload) to the leader.
func (b *reporter) forward(ctx context.Context, payload string) {
	_ = b.store.publish(ctx, chanInval, payload)
}

// addWaiter registers a waiter for the outcome of key and reports whether
// it is the only one: the first waiter forwards the report, and is the one
// charged for it (c.pay); a refused charge registers nothing.
func (b *reporter) addWaiter(key string, c *claim) (chan string, bool, error) {
	ch := make(chan string, 1)
	b.waitMu.Lock()
	defer b.waitMu.Unlock()
	first := len(b.waiters[key]) == 0
	if first {
		if err := c.pay(); err != nil {
			return nil, false, err
		}
	}
	b.waiters[key] = append(b.waiters[key], ch)
	return ch, first, nil
}

func (b *reporter) removeWaiter(key string, ch chan string) {
	b.waitMu.Lock()
	defer b.waitMu.Unlock()
	list := b.waiters[key]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(b.waiters, key)
	} else {
		b.waiters[key] = list
	}
}

// handleInvalRequest serves a report forwarded by a follower, if this replica
// leads, and publishes the outcome. Reports of a token already in progress
// here are dropped: their outcome is published when that one ends.
func (b *refresher) handleInvalRequest(payload string) {
	t := b.el.term.Load()
	if t == nil || t.ctx.Err() != nil {
		return
	}
	ns, rest, _ := strings.Cut(payload, "\t")
	appid, failed, ok := strings.Cut(rest, "\t")
	failed, flag, _ := strings.Cut(failed, "\t")
	it := b.catalog().byRef(ns, appid)
	if !ok || it == nil {
		return
	}
	// The follower charged the report when it forwarded it.
	c := &claim{failed: failed, proof: proofOf(flag), since: time.Now()}
	t.sched().goForwarded(payload, func() {
		ctx, cancel := context.WithTimeout(t.ctx, invalidateWait(b.cfg))
		defer cancel()
		_, err := b.refreshIfCurrent(ctx, t, it, c)
		res := outcomeOK
		switch {
		case errors.Is(err, errStillAccepted):
			res = outcomeAccepted
		case errors.Is(err, ErrForceLimited):
			res = outcomeLimited
		case errors.Is(err, ErrNotConfirmed):
			res = outcomeUnconfirmed
		case err != nil:
			res = outcomeError
		}
		pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.WeChat.Timeout)
		defer pcancel()
		_ = b.store.publish(pctx, chanInvalDone, payload+"\t"+res)
	})
}

// handleInvalDone wakes the waiters of a forwarded report.
func (b *reporter) handleInvalDone(payload string) {
	i := strings.LastIndexByte(payload, '\t')
	if i < 0 {
		return
	}
	key, res := payload[:i], payload[i+1:]
	if res == outcomeAccepted {
		// Remember the verdict, so that reports of the token made here
		// around now are answered without asking the leader again.
		ns, rest, _ := strings.Cut(key, "\t")
		appid, rest, _ := strings.Cut(rest, "\t")
		failed, _, _ := strings.Cut(rest, "\t")
		if it := b.catalog().byRef(ns, appid); it != nil {
			it.verdict.Store(&verdict{token: failed, at: time.Now()})
		}
	}
	b.waitMu.Lock()
	defer b.waitMu.Unlock()
	for _, ch := range b.waiters[key] {
		select {
		case ch <- res:
		default:
		}
	}
}
