package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
)

var (
	errLeaseShort    = errors.New("broker: leader lease too short for a credential call")
	errNoAccessToken = errors.New("broker: no valid access token to fetch a ticket with")
)

// refresher is the leader's work: every credential call (under the lease,
// counted against the quota and the force budget, its intent recorded),
// every fenced write, and the two refreshes that use them — the scheduled
// one (refresh) and the conditional one of a report (refreshIfCurrent),
// which share the fetch and the write path.
type refresher struct {
	*core
	wx  WeChat
	rep *replica
	ex  *exporter
	el  *elector
	op  *opLeader // the Open Platform's part of the refresh (oprefresh.go)
}

// leaderWork is what the elector runs for each term: the restorer's
// repair of Redis, then the scheduler over the refresher.
type leaderWork struct {
	r   *refresher
	fix *restorer
	ex  *exporter
	el  *elector
}

// begin gives a new term its scheduler.
func (w *leaderWork) begin(t *term) { t.work = newScheduler(w.r, t) }

// run repairs what Redis lost, then runs the term's scheduler until the
// term ends.
func (w *leaderWork) run(t *term) {
	w.fix.reseed(t)
	go w.r.op.sweepLoop(t)
	t.sched().run()
}

// end clears what only a leader knows.
func (w *leaderWork) end() { w.ex.resetLeaderMetrics() }

// repairIfLeading repairs, on the leader, what Redis lost (stored is what a
// reconcile read).
func (w *leaderWork) repairIfLeading(stored map[string]map[string]string) {
	if t := w.el.current(); t != nil {
		w.fix.repair(t, stored)
	}
}

// writeError is a credential WeChat handed out that could not be stored
// (Redis failed, not the fence): the scheduler retries the write, not the call.
type writeError struct {
	rec *record
	err error
}

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// credentialCall makes one call to a credential endpoint under term t: only
// while the lease outlasts the call's timeout, after counting it (fenced)
// against the quota and, when forced, the force budget.
func (b *refresher) credentialCall(t *term, it *item, api, mode string, call func(context.Context) error) error {
	timeout := b.cfg.WeChat.Timeout
	if err := t.ctx.Err(); err != nil {
		return context.Cause(t.ctx)
	}
	if t.lease.remaining() <= timeout {
		return errLeaseShort
	}
	pctx, cancel := context.WithTimeout(t.ctx, timeout)
	_, err := b.preCall(pctx, t.fence, it, api, mode)
	cancel()
	if err != nil {
		b.rejected(t, it, err)
		return err
	}
	if t.lease.remaining() <= timeout {
		return errLeaseShort
	}
	ctx, cancel := context.WithTimeout(t.ctx, timeout)
	defer cancel()
	err = call(ctx)
	if err != nil && t.ctx.Err() == nil && supersedes(it, mode) && notMinted(err) {
		b.clearIntent(t, it)
	}
	if err != nil && t.ctx.Err() == nil {
		code := -2
		var ae *wechat.APIError
		if errors.As(err, &ae) {
			code = ae.Code
		}
		b.m.WeChatErrors.WithLabelValues(it.ns, it.label(), api, metrics.ErrcodeLabel(code)).Inc()
	}
	return err
}

// fetch makes one credential call for it (mode callPlain, or callForced
// for a forced refresh) through its kind and stores the answer. A kind that
// needs another credential is fetched with that one's current value; when
// WeChat rejects that value, it is refreshed conditionally and the call
// made once more.
func (b *refresher) fetch(t *term, it *item, mode string) (*record, error) {
	k := it.spec()
	for attempt := 0; ; attempt++ {
		a := it.config() // read at every call: a reload may have changed the secret
		req := FetchRequest{AppID: it.appid, Secret: a.Secret.Reveal(), Forced: mode == callForced}
		var az *azWrite
		if isPlatform(it) {
			var err error
			if az, err = b.op.prepare(t, it, &req); err != nil {
				return nil, err
			}
		}
		src := ""
		dep := it.needed()
		if dep != nil {
			cur := dep.cur.Load()
			if cur == nil || !b.now().Before(cur.ExpiresAt) {
				return nil, errNoAccessToken
			}
			req.Needed, src = cur.Value, shortHash(cur.Value)
		}
		start := b.now()
		var got Fetched
		err := b.credentialCall(t, it, k.API(), mode, func(ctx context.Context) error {
			var err error
			got, err = k.Fetch(ctx, b.wx, req)
			return err
		})
		var ae *wechat.APIError
		if dep != nil && attempt == 0 && errors.As(err, &ae) && ae.InvalidCredential() {
			b.m.InvalidCredential.WithLabelValues(it.ns, it.label(), metrics.SourceBroker).Inc()
			if _, err := b.refreshIfCurrent(t.ctx, t, dep, &claim{failed: req.Needed, since: time.Now()}); err != nil {
				return nil, fmt.Errorf("refresh the %s %s rejected: %w", dep.kind, k.API(), err)
			}
			continue
		}
		if err != nil {
			if supersedes(it, mode) && wechat.OutcomeUnknown(err) {
				b.assumeSuperseded(t, it, start)
			}
			if isPlatform(it) {
				b.op.failed(t, it, req, err)
			}
			return nil, err
		}
		if !validValue(got.Value) || got.ExpiresIn <= 0 {
			return nil, fmt.Errorf("%s answered an unusable %s (expires_in %s)", k.API(), k.Name(), got.ExpiresIn)
		}
		rec := &record{Value: got.Value, ExpiresAt: start.Add(got.ExpiresIn), FetchedAt: start, Src: src}
		if it.kind == KindAuthorizerToken {
			if !validValue(got.RefreshToken) {
				return nil, fmt.Errorf("%s answered an unusable refresh token", k.API())
			}
			var err error
			if rec.Sealed, err = b.op.sealRefresh(got); err != nil {
				return nil, err
			}
			rec.Src = ""
		}
		return b.saveWith(t, it, rec, k.Exclusive(), az)
	}
}

// assumeSuperseded handles a classic fetch whose outcome is unknown: WeChat
// may have minted a new token, which kills the stored one after the overlap.
func (b *refresher) assumeSuperseded(t *term, it *item, start time.Time) {
	cur := it.cur.Load()
	limit := start.Add(b.overlap)
	if cur == nil || !cur.ExpiresAt.After(limit) {
		return
	}
	b.log.Warn("token fetch outcome unknown; assuming the stored token ends after the overlap",
		append(itemFields(it), zapTok(cur.Value), zap.Time("assumed_expiry", limit))...)
	if _, err := b.save(t, it, &record{Value: cur.Value, ExpiresAt: limit, FetchedAt: cur.FetchedAt, Src: cur.Src, Sealed: cur.Sealed}, false); err != nil && !errors.Is(err, errFenced) {
		b.log.Warn("cannot shorten the stored token's expiry", append(itemFields(it), zapErr(err))...)
	}
}

// outcome is what one refresh attempt ended with. The scheduler alone turns
// it into the next due time (scheduler.next).
type outcome struct {
	rec *record // the stored record, on success
	err error
	// retryAfter is the least wait before a retry that the error itself asks
	// for (45011: WeChat's MinBackoff); zero otherwise.
	retryAfter time.Duration
	// stopUntil, when set, stops retries until then: an error retrying
	// cannot fix (far), or WeChat's daily quota (the next UTC+8 midnight).
	stopUntil time.Time
	termOver  bool // the term ended: the next leader takes over from Redis
}

// refresh runs one scheduled refresh of k (a pending write, else a fetch),
// records its metrics and, unless a retry follows, its status, and returns
// the outcome. The caller holds k's lock.
func (b *refresher) refresh(t *term, k *task) outcome {
	it := k.it
	began := time.Now()
	var rec *record
	var err error
	if p := k.pending; p != nil {
		k.pending = nil
		if b.now().Before(p.ExpiresAt) {
			rec, err = b.save(t, it, p, it.spec().Exclusive())
		}
	}
	if rec == nil && err == nil {
		rec, err = b.fetch(t, it, callPlain)
	}
	if t.ctx.Err() != nil {
		return outcome{termOver: true}
	}
	return b.conclude(t, k, began, rec, err)
}

// conclude is the bookkeeping of every refresh attempt, scheduled (refresh)
// or conditional (refreshIfCurrent): a credential Redis failed to store is
// kept for the scheduler to write again (k.pending), the attempt is counted
// and timed, its status recorded, and retries stop after an error retrying
// cannot fix. A lease too short, a missing needed credential or a spent
// force budget are no attempt: they are passed on uncounted. The caller
// holds k's lock; the term is live.
func (b *refresher) conclude(t *term, k *task, began time.Time, rec *record, err error) outcome {
	it := k.it
	now := b.now()
	var we *writeError
	if errors.As(err, &we) {
		k.pending = we.rec
	}
	switch {
	case err == nil:
		b.m.TokenRefresh.WithLabelValues(it.ns, it.label(), it.kind, metrics.ResultSuccess).Inc()
		b.m.TokenRefreshDuration.WithLabelValues(it.ns, it.kind).Observe(time.Since(began).Seconds())
		b.recordStatus(t, it, &refreshStatus{LastRefresh: rec.FetchedAt})
		b.ex.clearStopped(it)
		return outcome{rec: rec}
	case errors.Is(err, errLeaseShort), waiting(err), errors.Is(err, ErrForceLimited):
		return outcome{err: err}
	}

	b.m.TokenRefresh.WithLabelValues(it.ns, it.label(), it.kind, metrics.ResultError).Inc()
	b.m.TokenRefreshDuration.WithLabelValues(it.ns, it.kind).Observe(time.Since(began).Seconds())
	var ae *wechat.APIError
	if errors.As(err, &ae) && (ae.ConfigError() || ae.QuotaExceeded()) {
		until := now.Add(far)
		if ae.QuotaExceeded() {
			until = nextDay(now)
		}
		h := ae.Hint()
		b.log.Error("wechat refused the credential call; retries stopped until fixed",
			append(itemFields(it), zap.String("api", ae.API), zap.Int("errcode", ae.Code), zap.String("rid", ae.RID),
				zap.String("hint", h.Title), zap.String("fix", h.FixEN), zap.String("fix_zh", h.FixZH), zapErr(err))...)
		b.recordStatus(t, it, &refreshStatus{LastError: errorInfo(err, now), RetriesStopped: true, NextAttempt: until})
		b.ex.markStopped(it, ae.Code)
		return outcome{err: err, stopUntil: until}
	}
	o := outcome{err: err}
	if ae != nil {
		o.retryAfter = ae.MinBackoff()
	}
	return o
}

// recordStatus keeps the last refresh outcome (locally and in Redis). The
// last successful refresh time survives later errors.
func (b *refresher) recordStatus(t *term, it *item, st *refreshStatus) {
	if st.LastRefresh.IsZero() {
		if prev := it.status.Load(); prev != nil {
			st.LastRefresh = prev.LastRefresh
		} else if cur := it.cur.Load(); cur != nil {
			st.LastRefresh = cur.FetchedAt
		}
	}
	ctx, cancel := context.WithTimeout(t.ctx, b.cfg.WeChat.Timeout)
	defer cancel()
	if err := b.writeStatus(ctx, t.fence, it, st); err != nil {
		b.rejected(t, it, err)
	}
}

// errorInfo describes a refresh error for the status API: never a secret
// (wechat errors carry none).
func errorInfo(err error, at time.Time) *ErrorInfo {
	info := &ErrorInfo{At: at.UTC(), Message: err.Error()}
	var ae *wechat.APIError
	var te *wechat.TransportError
	switch {
	case errors.As(err, &ae):
		info.API, info.Errcode, info.RID = ae.API, ae.Code, ae.RID
		h := ae.Hint()
		info.Hint = &HintInfo{Title: h.Title, EN: h.EN, ZH: h.ZH, FixEN: h.FixEN, FixZH: h.FixZH}
	case errors.As(err, &te):
		info.API, info.Transport = te.API, te.Kind.String()
	}
	return info
}

// waiting reports an error that is no attempt but a wait for something
// else: the access token a ticket needs, the component token an authorizer
// needs, a verify ticket, or an authorizer that is no longer active. What
// brings it (a stored token, a ticket, a grant) makes the item due again.
func waiting(err error) bool {
	return errors.Is(err, errNoAccessToken) || errors.Is(err, errNoVerifyTicket) || errors.Is(err, errNotActive)
}
