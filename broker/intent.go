package broker

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/wechat"
)

// A credential call that may mint a token which supersedes the stored one (a
// classic fetch, a forced stable refresh) is recorded in Redis before it is
// made: the pre-call script sets {p}:ns:<ns>:intent[appid] under the fence,
// and the write that stores the call's answer removes it in the same script.
// An intent that is still there when a new leader takes over belongs to a
// call whose answer never reached Redis (the leader was killed or paused
// during the call, or between WeChat's answer and the write): WeChat may have
// minted a token the cluster never saw, which kills the stored one after the
// overlap. The new leader then treats the stored token as ending within the
// overlap after the call began and refreshes it at once. The in-process
// unknown-outcome rule (assumeSuperseded) covers the same case for a leader
// that survives its call.

// supersedes reports whether a credential call in mode may invalidate it's
// current token at WeChat.
func supersedes(it *item, mode string) bool {
	return kindSupersedes(it.spec(), mode)
}

// kindSupersedes reports whether a call of kind k in mode may invalidate the
// stored value at WeChat: an exclusive kind's forced call always, and its
// plain call when every call mints a new value (not rotating).
func kindSupersedes(k Kind, mode string) bool {
	if !k.Exclusive() {
		return false
	}
	return mode == callForced || (mode == callPlain && !k.Rotating())
}

// notMinted reports whether a failed credential call certainly minted
// nothing: WeChat answered with an errcode, or the request was never sent.
func notMinted(err error) bool {
	var ae *wechat.APIError
	if errors.As(err, &ae) {
		return true
	}
	var te *wechat.TransportError
	return errors.As(err, &te) && !te.OutcomeUnknown()
}

// clearIntent drops the intent of a call of this term that failed without
// minting a token, so a successor does not refresh for nothing.
func (b *refresher) clearIntent(t *term, it *item) {
	ctx, cancel := context.WithTimeout(t.ctx, b.cfg.WeChat.Timeout)
	defer cancel()
	if err := b.store.clearIntent(ctx, t.fence, it.ns, it.key()); err != nil {
		b.rejected(t, it, err)
	}
}

// settleIntents runs when a term begins: every access token with an intent
// of an earlier term is treated as superseded (it ends within the overlap
// after that call began) and refreshed at once. The intent stays until a new
// token is stored, so the next leader does the same should this one die too,
// and a force marker of the dead leader does not block reports meanwhile.
func (b *refresher) settleIntents(t *term) {
	ctx, cancel := context.WithTimeout(t.ctx, b.cfg.WeChat.Timeout)
	defer cancel()
	stored, err := b.store.intents(ctx)
	if err != nil {
		if t.ctx.Err() == nil {
			b.log.Warn("cannot read credential-call intents; relying on the schedule", zapErr(err))
		}
		return
	}
	for ns, intents := range stored {
		for appid, raw := range intents {
			it := b.catalog().byKey(ns, appid)
			if it == nil {
				continue
			}
			in, err := parseIntent(raw)
			if err != nil {
				b.log.Warn("ignoring malformed credential-call intent", zapNS(ns), zapApp(appid), zapErr(err))
				continue
			}
			if in.epoch == t.epoch {
				continue
			}
			b.settleIntent(t, it, in)
		}
	}
}

// settleIntent shortens it's stored token after an unsettled call of an
// earlier term and marks it for a refresh at once.
func (b *refresher) settleIntent(t *term, it *item, in intent) {
	k := t.sched().task(it)
	if k == nil || !k.acquire(t.ctx) {
		return
	}
	defer k.release()
	k.superseded.Store(true)
	if it.kind == KindAuthorizerToken {
		// With rotation on, the call may also have retired the stored
		// refresh token: recover it from the authorizer list first.
		k.recoverFirst.Store(true)
	}
	cur := it.cur.Load()
	limit := in.start.Add(b.overlap)
	fields := append(itemFields(it), zap.Int64("call_epoch", in.epoch), zap.Time("call_started", in.start),
		zap.Bool("forced", in.mode == callForced))
	if cur == nil || !cur.ExpiresAt.After(limit) || cur.FetchedAt.After(in.start) {
		b.log.Warn("a previous leader's credential call left no outcome; refreshing at once", fields...)
		return
	}
	b.log.Warn("a previous leader's credential call left no outcome; treating the stored token as superseded and refreshing at once",
		append(fields, zapTok(cur.Value), zap.Time("assumed_expiry", limit))...)
	if _, err := b.save(t, it, &record{Value: cur.Value, ExpiresAt: limit, FetchedAt: cur.FetchedAt, Src: cur.Src, Sealed: cur.Sealed}, false); err != nil && !errors.Is(err, errFenced) {
		b.log.Warn("cannot shorten the stored token's expiry", append(itemFields(it), zapErr(err))...)
	}
}
