package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// writeOf is the fenced write of r, a record for it: same keeps the
// generation (a changed expiry of the same value); gen is the generation the
// leader knows, so a Redis that lost its data does not restart the count;
// fetched marks what a credential call returned, so the write also settles
// the call's intent (exclusive kinds).
func writeOf(it *item, r *record, same bool, gen int64, fetched bool, now time.Time) recordWrite {
	w := recordWrite{ns: it.ns, field: it.field, value: r.Value, exp: r.ExpiresAt, at: r.FetchedAt, src: r.Src, sameValue: same, curGen: gen,
		sealed: r.Sealed}
	if it.spec().Exclusive() && fetched {
		w.settles = it.key()
	}
	if it.kind == KindAccessToken {
		w.issuedTTL = issuedTTL(r.ExpiresAt, now)
	}
	return w
}

// writeStatus stores it's refresh status under fence f.
func (b *refresher) writeStatus(ctx context.Context, f fence, it *item, st *refreshStatus) error {
	it.status.Store(st)
	if err := b.store.writeStatus(ctx, f, it.ns, it.field, st); err != nil {
		return fmt.Errorf("write status of appid %q: %w", it.appid, err)
	}
	return nil
}

// save is the one write path of a credential: it writes r (value, expiry,
// fetch time, src) through term t's fence, applies the stored record to the
// cache and tells the scheduler. fetched marks what a credential call
// returned (see writeOf). The write does not stop with the term's context:
// the script, not a local check, decides whether this leader may still
// write. A write Redis failed (not the fence) is a *writeError carrying r,
// so the scheduler retries the write, not the call.
func (b *refresher) save(t *term, it *item, r *record, fetched bool) (*record, error) {
	return b.saveWith(t, it, r, fetched, nil)
}

// saveWith is save that also replaces an authorizer's registry entry (az,
// nil for none) in the same fenced script.
func (b *refresher) saveWith(t *term, it *item, r *record, fetched bool, az *azWrite) (*record, error) {
	if h := b.hooks.beforeWrite; h != nil {
		h(it)
	}
	cur := it.cur.Load()
	var gen int64
	same := false
	if cur != nil {
		gen, same = cur.Gen, cur.Value == r.Value
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), b.cfg.WeChat.Timeout)
	defer cancel()
	w := writeOf(it, r, same, gen, fetched, b.now())
	w.az = az
	rec, err := b.store.writeRecord(ctx, t.fence, w)
	if err != nil {
		err = fmt.Errorf("write %s of appid %q: %w", it.kind, it.appid, err)
		if errors.Is(err, errFenced) {
			b.rejected(t, it, err)
			return nil, err
		}
		return nil, &writeError{rec: &record{Value: r.Value, ExpiresAt: r.ExpiresAt, FetchedAt: r.FetchedAt, Src: r.Src, Sealed: r.Sealed}, err: err}
	}
	b.rep.apply(it, rec)
	t.sched().stored(it, fetched, !same)
	return rec, nil
}

// rejected handles a fenced-out write: count it and step down.
func (b *refresher) rejected(t *term, it *item, err error) {
	if !errors.Is(err, errFenced) {
		return
	}
	b.m.FencedWritesRejected.Inc()
	b.log.Warn("fenced write rejected; stepping down", append(itemFields(it), zap.Int64("epoch", t.epoch))...)
	t.stop(errFenced)
}
