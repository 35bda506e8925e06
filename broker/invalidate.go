package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
)

// Outcomes the leader publishes on {p}:inval:done for forwarded reports.
const (
	outcomeOK      = "ok"
	outcomeLimited = "limited"
	outcomeError   = "error"
)

// Invalidate reports that failedToken met 40001/42001/40014 (source:
// metrics.SourceClient, SourceLogin, SourceProxy or SourceBroker). The broker
// refreshes only if failedToken is still the current token; concurrent
// reports of the same token on any replica cause one WeChat call. It returns
// the current token afterwards; a follower waits (until ctx's deadline, or a
// bounded default) for the leader's new token. Errors: ErrUnknownApp,
// ErrForceLimited when the forced-refresh budget is spent, ErrNoToken (wrapped)
// when no new token arrived in time.
func (b *Broker) Invalidate(ctx context.Context, ns, appid, failedToken, source string) (Token, error) {
	e, ok := b.entry(ns, appid)
	if !ok {
		return Token{}, ErrUnknownApp
	}
	switch source {
	case metrics.SourceClient, metrics.SourceLogin, metrics.SourceProxy, metrics.SourceBroker:
	default:
		source = metrics.SourceClient
	}
	b.m.InvalidCredential.WithLabelValues(ns, appid, source).Inc()
	it := e.token
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.invalidateWait())
		defer cancel()
	}
	if cur := it.cur.Load(); cur != nil && cur.Value != failedToken {
		// A stale report, or one about a token newer than this replica has
		// seen: catch up with Redis once and answer with the current token.
		if p := it.prev.Load(); p == nil || p.Value != failedToken {
			_ = b.refreshItem(ctx, it)
		}
		return b.currentExcept(it, failedToken)
	}
	if t := b.term.Load(); t != nil && t.ctx.Err() == nil {
		_, err := b.leaderInvalidate(ctx, t, it, failedToken)
		switch {
		case err == nil:
			return b.currentExcept(it, failedToken)
		case errors.Is(err, ErrForceLimited):
			return Token{}, err
		case t.ctx.Err() == nil || ctx.Err() != nil:
			return Token{}, fmt.Errorf("%w: %w", ErrNoToken, err)
		}
		// The term ended under us: wait for the next leader like a follower.
	}
	return b.followInvalidate(ctx, it, failedToken)
}

// invalidateWait bounds a follower's wait when the caller set no deadline:
// a normal and a forced call, and a leader takeover.
func (b *Broker) invalidateWait() time.Duration {
	return 2*b.cfg.WeChat.Timeout + b.cfg.Leader.LockTTL
}

// currentExcept returns the cached token unless it is failed or (nearly)
// expired.
func (b *Broker) currentExcept(it *item, failed string) (Token, error) {
	cur := it.cur.Load()
	if !servable(cur, b.now()) || cur.Value == failed {
		return Token{}, ErrNoToken
	}
	return Token{AccessToken: cur.Value, ExpiresAt: cur.ExpiresAt, Generation: cur.Gen}, nil
}

// leaderInvalidate performs the conditional refresh on the leader: only if
// failed is still the current token, one refresh at a time per app. Classic
// mode counts the fetch against the force budget; stable mode first makes a
// normal-mode call and forces only if WeChat hands back the failed token.
func (b *Broker) leaderInvalidate(ctx context.Context, t *term, it *item, failed string) (*record, error) {
	k := t.sched.tasks[it]
	if !k.acquire(ctx) {
		return nil, fmt.Errorf("wait for the refresh in progress: %w", context.Cause(ctx))
	}
	defer k.release()
	cur := it.cur.Load()
	if cur == nil || cur.Value != failed {
		return cur, nil // already replaced: nothing to do
	}
	now := b.now()
	if now.Before(cur.ExpiresAt) && k.external != failed {
		// The current token failed before its expiry and this broker did not
		// replace it: someone outside fetched a token for this AppID.
		k.external = failed
		b.m.ExternalInvalidation.WithLabelValues(it.ns, it.appid).Inc()
		b.log.Warn("access token invalidated outside the broker: another process fetched a token with this appid",
			append(itemFields(it), zapTok(failed), zap.Duration("expires_in", cur.ExpiresAt.Sub(now)))...)
	}
	began := time.Now()
	var rec *record
	var err error
	if it.app.app.TokenMode == config.ModeClassic {
		rec, err = b.fetchToken(t, it, callForced)
	} else {
		// If no forced refresh is allowed, a normal-mode call only helps
		// inside the rotation window; don't spend quota otherwise.
		pctx, cancel := context.WithTimeout(ctx, b.cfg.WeChat.Timeout)
		_, err = b.preCall(pctx, t.fence, it, wechat.APIStableToken, callForceCheck)
		cancel()
		if err != nil && (!errors.Is(err, ErrForceLimited) || cur.ExpiresAt.Sub(now) > b.cfg.Refresh.StableRotationWindow) {
			b.rejected(t, it, err)
			return nil, err
		}
		rec, err = b.fetchToken(t, it, callPlain)
		if err == nil && rec.Value == failed {
			rec, err = b.fetchToken(t, it, callForced)
			if err == nil && rec.Value == failed {
				err = fmt.Errorf("%w: wechat returned the failed token to a forced refresh", ErrForceLimited)
			}
		}
	}
	if err != nil {
		var we *writeError
		if errors.As(err, &we) {
			k.pending = we.rec
		}
		if !errors.Is(err, ErrForceLimited) && !errors.Is(err, errLeaseShort) && t.ctx.Err() == nil {
			b.m.TokenRefresh.WithLabelValues(it.ns, it.appid, it.kind, metrics.ResultError).Inc()
			b.log.Warn("conditional refresh failed", append(itemFields(it), zapErr(err))...)
		}
		return nil, err
	}
	b.m.TokenRefresh.WithLabelValues(it.ns, it.appid, it.kind, metrics.ResultSuccess).Inc()
	b.m.TokenRefreshDuration.WithLabelValues(it.ns, it.kind).Observe(time.Since(began).Seconds())
	b.recordStatus(t, it, &refreshStatus{LastRefresh: rec.FetchedAt})
	return rec, nil
}

// followInvalidate hands a report to the leader through Redis and waits until
// this replica's cache holds a token other than failed.
func (b *Broker) followInvalidate(ctx context.Context, it *item, failed string) (Token, error) {
	key := it.ns + "\t" + it.appid + "\t" + failed
	done := b.addWaiter(key)
	defer b.removeWaiter(key, done)
	b.forward(ctx, it, failed)
	tk := time.NewTicker(b.pollEvery)
	defer tk.Stop()
	polls := 0
	for {
		changed := it.changes()
		if tok, err := b.currentExcept(it, failed); err == nil {
			return tok, nil
		}
		select {
		case <-changed:
		case res := <-done:
			switch res {
			case outcomeLimited:
				return Token{}, ErrForceLimited
			case outcomeError:
				_ = b.refreshItem(ctx, it)
				if tok, err := b.currentExcept(it, failed); err == nil {
					return tok, nil
				}
				return Token{}, fmt.Errorf("%w: the leader's refresh failed", ErrNoToken)
			default:
				_ = b.refreshItem(ctx, it)
			}
		case <-tk.C:
			_ = b.refreshItem(ctx, it)
			if polls++; polls%4 == 0 {
				b.forward(ctx, it, failed) // the leader may have changed meanwhile
			}
		case <-ctx.Done():
			return Token{}, fmt.Errorf("%w: waiting for the leader's refresh: %w", ErrNoToken, ctx.Err())
		}
	}
}

// forward publishes the report to the leader.
func (b *Broker) forward(ctx context.Context, it *item, failed string) {
	err := b.rdb.Publish(ctx, b.keys.inval(), it.ns+"\t"+it.appid+"\t"+failed).Err()
	b.setRedis(err)
}

func (b *Broker) addWaiter(key string) chan string {
	ch := make(chan string, 1)
	b.waitMu.Lock()
	b.waiters[key] = append(b.waiters[key], ch)
	b.waitMu.Unlock()
	return ch
}

func (b *Broker) removeWaiter(key string, ch chan string) {
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
func (b *Broker) handleInvalRequest(payload string) {
	t := b.term.Load()
	if t == nil || t.ctx.Err() != nil {
		return
	}
	ns, rest, _ := strings.Cut(payload, "\t")
	appid, failed, ok := strings.Cut(rest, "\t")
	e, found := b.entry(ns, appid)
	if !ok || !found {
		return
	}
	t.sched.goForwarded(payload, func() {
		ctx, cancel := context.WithTimeout(t.ctx, b.invalidateWait())
		defer cancel()
		_, err := b.leaderInvalidate(ctx, t, e.token, failed)
		res := outcomeOK
		switch {
		case errors.Is(err, ErrForceLimited):
			res = outcomeLimited
		case err != nil:
			res = outcomeError
		}
		pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), b.cfg.WeChat.Timeout)
		defer pcancel()
		b.setRedis(b.rdb.Publish(pctx, b.keys.invalDone(), payload+"\t"+res).Err())
	})
}

// handleInvalDone wakes the waiters of a forwarded report.
func (b *Broker) handleInvalDone(payload string) {
	i := strings.LastIndexByte(payload, '\t')
	if i < 0 {
		return
	}
	key, res := payload[:i], payload[i+1:]
	b.waitMu.Lock()
	defer b.waitMu.Unlock()
	for _, ch := range b.waiters[key] {
		select {
		case ch <- res:
		default:
		}
	}
}
