package broker

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wxbroker/wxbroker/metrics"
)

// exporter keeps the per-credential metrics: it seeds the series alerts
// read, exports when each record is due, and clears what only a leader or a
// removed app had.
type exporter struct{ *core }

// The alerts page on the first event, so every per-app series they use
// exists from start-up (a counter first seen at 1 has no increase), and
// leader-only gauges never outlive the leadership or the UTC+8 day they
// describe (a former leader's stale count must not page).

// seedMetrics creates, at 0, every per-app series an alert reads as an
// increase, exports the forced-refresh cap, and gives every item a refresh
// deadline of start plus the time a leader needs to fetch a first token, so
// an app that never gets one shows as late.
func (b *exporter) seedMetrics(start time.Time, items []*item) {
	b.m.ForcedRefreshLimit.Set(float64(b.cfg.Refresh.ForceDailyCap))
	first := start.Add(b.cfg.Leader.LockTTL + b.cfg.WeChat.Timeout)
	for _, it := range items {
		b.m.TokenRefresh.WithLabelValues(it.ns, it.label(), it.kind, metrics.ResultSuccess)
		b.m.TokenRefresh.WithLabelValues(it.ns, it.label(), it.kind, metrics.ResultError)
		if !it.perItemSeries() {
			continue
		}
		b.m.RefreshDue.WithLabelValues(it.ns, it.appid, it.kind).Set(unixSeconds(first))
		if it.kind == KindAccessToken {
			b.m.ExternalInvalidation.WithLabelValues(it.ns, it.appid)
			for _, src := range []string{metrics.SourceClient, metrics.SourceCompat, metrics.SourceLogin, metrics.SourceProxy} {
				b.m.InvalidCredential.WithLabelValues(it.ns, it.appid, src)
			}
			b.m.ForcedRefreshUsed.WithLabelValues(it.ns, it.appid).Set(0)
		}
	}
}

// dropMetrics deletes every per-credential series of it (its app was
// removed by a reload): a removed app must not page as late or stopped.
func (b *exporter) dropMetrics(it *item) {
	if !it.perItemSeries() {
		return // an authorizer's series are its component's
	}
	match := map[string]string{"wx_namespace": it.ns, "appid": it.appid, "kind": it.kind}
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{b.m.TokenRefresh, b.m.TokenExpiry, b.m.TokenLastRefreshSuccess, b.m.RefreshDue, b.m.RefreshStopped} {
		v.DeletePartialMatch(match)
	}
	if it.kind != KindAccessToken {
		return
	}
	app := map[string]string{"wx_namespace": it.ns, "appid": it.appid}
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{b.m.ExternalInvalidation, b.m.ForcedRefreshUsed, b.m.WeChatQuotaUsed, b.m.WeChatErrors, b.m.InvalidCredential, b.m.FalseReports} {
		v.DeletePartialMatch(app)
	}
}

// exportDeadline sets wxbroker_token_refresh_due_timestamp_seconds for r, the
// record just applied to it's cache. Every replica computes it from the
// record alone, so the value agrees across replicas and still moves into the
// past when there is no leader at all.
func (b *exporter) exportDeadline(it *item, r *record) {
	b.m.RefreshDue.WithLabelValues(it.ns, it.appid, it.kind).Set(unixSeconds(b.refreshDeadline(it, r)))
}

// refreshDeadline is the latest time the scheduler (dueFor) starts
// refreshing r when nothing fails: the end of the jitter range. Classic
// tokens: before_expiry of the lifetime left. Stable tokens: 80 % of the
// rotation window left plus the jitter (WeChat mints the successor only in
// the window). Tickets: half of before_expiry left, the longest a ticket
// waits for its token's refresh to bring a new one.
func (b *exporter) refreshDeadline(it *item, r *record) time.Time {
	life := r.ExpiresAt.Sub(r.FetchedAt)
	if life <= 0 {
		return r.ExpiresAt
	}
	return it.spec().Deadline(b.cfg.Refresh, r.ExpiresAt, life)
}

// markStopped exports that retries of it stopped after errcode code.
func (b *exporter) markStopped(it *item, code int) {
	if !it.perItemSeries() {
		return // authorizers: wxbroker_open_platform_authorizers pages
	}
	b.clearStopped(it)
	b.m.RefreshStopped.WithLabelValues(it.ns, it.appid, it.kind, metrics.ErrcodeLabel(code)).Set(1)
}

// clearStopped removes it's retries-stopped series (a refresh succeeded).
func (b *exporter) clearStopped(it *item) {
	if !it.perItemSeries() {
		return
	}
	b.m.RefreshStopped.DeletePartialMatch(map[string]string{"wx_namespace": it.ns, "appid": it.appid, "kind": it.kind})
}

// resetLeaderMetrics clears what only a leader knows: today's call counts
// and the retries-stopped states. Called when a term ends; the next leader
// loads the day's counts from Redis.
func (b *exporter) resetLeaderMetrics() {
	b.m.RefreshStopped.Reset()
	b.resetDayMetrics()
}

// resetDayMetrics sets the per-day counts to zero (a new UTC+8 day, or no
// longer the leader).
func (b *exporter) resetDayMetrics() {
	b.m.WeChatQuotaUsed.Reset()
	for _, it := range b.catalog().items {
		if it.kind == KindAccessToken {
			b.m.ForcedRefreshUsed.WithLabelValues(it.ns, it.appid).Set(0)
		}
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1e3 }

// loadQuotaGauges sets wxbroker_wechat_quota_used from today's counters, so a
// new leader exports the day's count before its first call.
func (b *exporter) loadQuotaGauges(ctx context.Context) {
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
