package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/wechat"
)

// Every credential call is counted per app, per API and per UTC+8 day (when
// WeChat resets its quotas) in Redis, atomically with the fence check, so
// SREs see the count approach the daily limit before WeChat answers 45009.
// Invalidation-triggered (forced) fetches also count against
// force_min_interval and force_daily_cap.

// preCallLua counts a credential call against the daily quota and, for a
// forced refresh, against force_min_interval and force_daily_cap; it also
// records the call's intent, so that a leader dying before it stores the
// answer leaves a trace the next leader acts on (see intent.go).
// KEYS[3] quota counter, KEYS[4] force interval marker, KEYS[5] force counter,
// KEYS[6] intent hash; ARGV[3] counter TTL (s), ARGV[4] mode ("0" plain call,
// "1" forced call, "2" only check the force budget), ARGV[5]
// force_min_interval (ms), ARGV[6] force_daily_cap, ARGV[7] intent field
// (appid; "" records none), ARGV[8] intent value.
// Returns {status, quota used, forced today}: status 0 ok, 1 ok although a
// force marker of another term was present (its call left no outcome), -1
// fenced, -2 within force_min_interval, -3 daily cap reached.
//
// The force marker holds the epoch of the term that set it. A marker set by
// another term whose call is still unsettled (its intent is in the hash) does
// not block: that leader died between its forced call and the write, so the
// token clients report is most likely the one its call killed.
const preCallLua = fenceLua + `
local fc = 0
local st = 0
if ARGV[4] ~= '0' then
  local m = redis.call('GET', KEYS[4])
  if m then
    if m == ARGV[2] or ARGV[7] == '' or redis.call('HEXISTS', KEYS[6], ARGV[7]) == 0 then return {-2, 0, 0} end
    st = 1
  end
  fc = tonumber(redis.call('GET', KEYS[5]) or '0')
  if fc >= tonumber(ARGV[6]) then return {-3, 0, fc} end
  if ARGV[4] == '2' then return {st, 0, fc} end
  fc = redis.call('INCR', KEYS[5])
  redis.call('EXPIRE', KEYS[5], ARGV[3])
  if tonumber(ARGV[5]) > 0 then redis.call('SET', KEYS[4], ARGV[2], 'PX', ARGV[5]) end
end
if ARGV[7] ~= '' and ARGV[8] ~= '' then redis.call('HSET', KEYS[6], ARGV[7], ARGV[8]) end
local q = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {st, q, fc}
`

// Force modes of preCall.
const (
	callPlain      = "0"
	callForced     = "1"
	callForceCheck = "2"
)

// counterTTL keeps day counters a little past their UTC+8 day.
const counterTTL = 48 * time.Hour

// preCall counts a credential call for it against the quota of api (and the
// force budget in the forced modes), under fence f, and records the call's
// intent when the call may supersede the current access token (see
// intent.go). It returns the calls counted today.
func (b *Broker) preCall(ctx context.Context, f fence, it *item, api, mode string) (int64, error) {
	now := b.now()
	d := day(now)
	// The intent field names the app in both cases: the force marker rule
	// looks at it even when no call follows (callForceCheck).
	field, value := "", ""
	if it.kind == KindAccessToken {
		field = it.appid
		if supersedes(it, mode) {
			value = intentValue(f.epoch, now, mode)
		}
	}
	out, err := b.store.preCall(ctx, f, preCallArgs{
		ns: it.ns, appid: it.appid, api: api, day: d, mode: mode,
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
	if mode != callForceCheck {
		b.m.WeChatQuotaUsed.WithLabelValues(it.ns, it.appid, api).Set(float64(out.quota))
	}
	if mode != callPlain {
		b.m.ForcedRefreshUsed.WithLabelValues(it.ns, it.appid).Set(float64(out.forced))
	}
	return out.quota, nil
}

// quotaAPIs are the credential endpoints the broker calls.
func quotaAPIs() [3]string {
	return [3]string{wechat.APIToken, wechat.APIStableToken, wechat.APIGetTicket}
}

// loadQuotaGauges sets wxbroker_wechat_quota_used from today's counters, so a
// new leader exports the day's count before its first call.
func (b *Broker) loadQuotaGauges(ctx context.Context) {
	snap, err := b.store.gather(ctx, b.catalog().cfg, b.now())
	if err != nil {
		return
	}
	for _, it := range b.catalog().items {
		if it.kind != KindAccessToken {
			continue
		}
		for api, n := range snap.quota[it.ns+"/"+it.appid] {
			b.m.WeChatQuotaUsed.WithLabelValues(it.ns, it.appid, api).Set(float64(n))
		}
		b.m.ForcedRefreshUsed.WithLabelValues(it.ns, it.appid).Set(float64(snap.forced[it.ns+"/"+it.appid]))
	}
}

// day is the UTC+8 calendar day of t (WeChat resets quotas at its midnight).
func day(t time.Time) string {
	return t.UTC().Add(8 * time.Hour).Format("20060102")
}

// nextDay is the next UTC+8 midnight after t.
func nextDay(t time.Time) time.Time {
	s := t.UTC().Add(8 * time.Hour)
	d := time.Date(s.Year(), s.Month(), s.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, 1)
	return d.Add(-8 * time.Hour)
}
