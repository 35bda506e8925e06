package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Every credential call is counted per app, per API and per UTC+8 day (when
// WeChat resets its quotas) in Redis, atomically with the fence check, so
// SREs see the count approach the daily limit before WeChat answers 45009.
// Invalidation-triggered (forced) fetches also count against
// force_min_interval and force_daily_cap.

// Force modes of preCall.
const (
	callPlain      = "0"
	callForced     = "1"
	callForceCheck = "2"
)

// preCall counts a credential call for it against the quota of api (and the
// force budget in the forced modes), under fence f, and records the call's
// intent when the call may supersede the current access token (see
// intent.go). It returns the calls counted today.
func (b *refresher) preCall(ctx context.Context, f fence, it *item, api, mode string) (int64, error) {
	now := b.now()
	d := day(now)
	// The intent field names the app in both cases: the force marker rule
	// looks at it even when no call follows (callForceCheck).
	field, value := "", ""
	if it.spec().Exclusive() {
		field = it.key()
		if supersedes(it, mode) {
			value = intentValue(f.epoch, now, mode)
		}
	}
	out, err := b.store.preCall(ctx, f, preCallArgs{
		ns: it.ns, appid: it.key(), api: api, day: d, mode: mode,
		forceMinInterval: b.cfg.Refresh.ForceMinInterval, forceDailyCap: b.cfg.Refresh.ForceDailyCap,
		intentField: field, intentValue: value,
	})
	switch {
	case errors.Is(err, errForceInterval), errors.Is(err, errForceCap):
		return 0, err
	case err != nil:
		return 0, fmt.Errorf("count %s call of appid %q: %w", api, it.appid, err)
	case out.staleMarker:
		b.log.Warn("force_min_interval marker of a previous leader ignored: its forced call left no outcome",
			append(itemFields(it), zap.String("api", api))...)
	}
	if !it.perItemSeries() {
		return out.quota, nil // an authorizer's count is its own, not its component's
	}
	if mode != callForceCheck {
		b.m.WeChatQuotaUsed.WithLabelValues(it.ns, it.appid, api).Set(float64(out.quota))
	}
	if mode != callPlain {
		b.m.ForcedRefreshUsed.WithLabelValues(it.ns, it.appid).Set(float64(out.forced))
	}
	return out.quota, nil
}

// nextDay is the next UTC+8 midnight after t.
func nextDay(t time.Time) time.Time {
	s := t.UTC().Add(8 * time.Hour)
	d := time.Date(s.Year(), s.Month(), s.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, 1)
	return d.Add(-8 * time.Hour)
}
