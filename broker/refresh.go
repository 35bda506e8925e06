package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
)

var (
	errLeaseShort    = errors.New("broker: leader lease too short for a credential call")
	errNoAccessToken = errors.New("broker: no valid access token to fetch a ticket with")
)

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
func (b *Broker) credentialCall(t *term, it *item, api, mode string, call func(context.Context) error) error {
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
		b.m.WeChatErrors.WithLabelValues(it.ns, it.appid, api, metrics.ErrcodeLabel(code)).Inc()
	}
	return err
}

// fetchToken fetches it's access token (mode callPlain, or callForced for a
// forced refresh) and stores it.
func (b *Broker) fetchToken(t *term, it *item, mode string) (*record, error) {
	a := it.app.app
	classic := a.TokenMode == config.ModeClassic
	api := wechat.APIStableToken
	if classic {
		api = wechat.APIToken
	}
	start := b.now()
	var tok wechat.Token
	err := b.credentialCall(t, it, api, mode, func(ctx context.Context) error {
		var err error
		if classic {
			tok, err = b.wx.Token(ctx, a.AppID, a.Secret.Reveal())
		} else {
			tok, err = b.wx.StableToken(ctx, a.AppID, a.Secret.Reveal(), mode == callForced)
		}
		return err
	})
	if err != nil {
		if supersedes(it, mode) && wechat.OutcomeUnknown(err) {
			b.assumeSuperseded(t, it, start)
		}
		return nil, err
	}
	if !validValue(tok.AccessToken) || tok.ExpiresIn <= 0 {
		return nil, fmt.Errorf("%s answered an unusable token (expires_in %s)", api, tok.ExpiresIn)
	}
	return b.saveFetched(t, it, tok.AccessToken, start.Add(tok.ExpiresIn), start, "", true)
}

// assumeSuperseded handles a classic fetch whose outcome is unknown: WeChat
// may have minted a new token, which kills the stored one after the overlap.
func (b *Broker) assumeSuperseded(t *term, it *item, start time.Time) {
	cur := it.cur.Load()
	limit := start.Add(b.overlap)
	if cur == nil || !cur.ExpiresAt.After(limit) {
		return
	}
	b.log.Warn("token fetch outcome unknown; assuming the stored token ends after the overlap",
		append(itemFields(it), zapTok(cur.Value), zap.Time("assumed_expiry", limit))...)
	if _, err := b.save(t, it, cur.Value, limit, cur.FetchedAt, cur.Src); err != nil && !errors.Is(err, errFenced) {
		b.log.Warn("cannot shorten the stored token's expiry", append(itemFields(it), zapErr(err))...)
	}
}

// fetchTicket fetches a ticket with the current access token and stores it.
// A token WeChat rejects is refreshed conditionally and the call retried once.
func (b *Broker) fetchTicket(t *term, it *item) (*record, error) {
	for attempt := 0; ; attempt++ {
		tok := it.app.token.cur.Load()
		if tok == nil || !b.now().Before(tok.ExpiresAt) {
			return nil, errNoAccessToken
		}
		start := b.now()
		var tk wechat.Ticket
		err := b.credentialCall(t, it, wechat.APIGetTicket, callPlain, func(ctx context.Context) error {
			var err error
			tk, err = b.wx.Ticket(ctx, tok.Value, it.typ)
			return err
		})
		var ae *wechat.APIError
		if errors.As(err, &ae) && ae.InvalidCredential() && attempt == 0 {
			b.m.InvalidCredential.WithLabelValues(it.ns, it.appid, metrics.SourceBroker).Inc()
			if _, err := b.refreshIfCurrent(t.ctx, t, it.app.token, &claim{failed: tok.Value, since: time.Now()}); err != nil {
				return nil, fmt.Errorf("refresh the access token getticket rejected: %w", err)
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if !validValue(tk.Ticket) || tk.ExpiresIn <= 0 {
			return nil, fmt.Errorf("getticket answered an unusable ticket (expires_in %s)", tk.ExpiresIn)
		}
		return b.save(t, it, tk.Ticket, start.Add(tk.ExpiresIn), start, shortHash(tok.Value))
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
func (b *Broker) refresh(t *term, k *task) outcome {
	it := k.it
	began := time.Now()
	var rec *record
	var err error
	if p := k.pending; p != nil {
		k.pending = nil
		if b.now().Before(p.ExpiresAt) {
			rec, err = b.saveFetched(t, it, p.Value, p.ExpiresAt, p.FetchedAt, p.Src, true)
		}
	}
	if rec == nil && err == nil {
		if it.kind == KindAccessToken {
			rec, err = b.fetchToken(t, it, callPlain)
		} else {
			rec, err = b.fetchTicket(t, it)
		}
	}
	if t.ctx.Err() != nil {
		return outcome{termOver: true}
	}
	now := b.now()
	var we *writeError
	if errors.As(err, &we) {
		k.pending = we.rec
	}
	switch {
	case err == nil:
		b.m.TokenRefresh.WithLabelValues(it.ns, it.appid, it.kind, metrics.ResultSuccess).Inc()
		b.m.TokenRefreshDuration.WithLabelValues(it.ns, it.kind).Observe(time.Since(began).Seconds())
		b.recordStatus(t, it, &refreshStatus{LastRefresh: rec.FetchedAt})
		b.clearStopped(it)
		return outcome{rec: rec}
	case errors.Is(err, errLeaseShort), errors.Is(err, errNoAccessToken):
		return outcome{err: err}
	}

	b.m.TokenRefresh.WithLabelValues(it.ns, it.appid, it.kind, metrics.ResultError).Inc()
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
		b.markStopped(it, ae.Code)
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
func (b *Broker) recordStatus(t *term, it *item, st *refreshStatus) {
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
