package broker

import (
	"context"
	"time"

	"github.com/wxbroker/wxbroker/metrics"
)

// Invalidate reports that failedToken met 40001/42001/40014 (source:
// metrics.SourceClient, SourceLogin, SourceProxy or SourceBroker), with
// WeChat's own answer as proof: the report is trusted. The broker refreshes
// only if failedToken is still the current token; concurrent reports of the
// same token on any replica cause one WeChat call. It returns the current
// token afterwards; a follower waits (until ctx's deadline, or a bounded
// default) for the leader's new token. Errors: ErrUnknownApp,
// ErrForceLimited when the forced-refresh budget is spent, ErrNoToken
// (wrapped) when no new token arrived in time.
func (b *Broker) Invalidate(ctx context.Context, ns, appid, failedToken, source string) (Token, error) {
	return b.ReportFailure(ctx, ns, appid, Report{Token: failedToken, Source: source, Proof: Proven})
}

// InvalidateUnproven is Invalidate for a report that carries no WeChat
// answer: a client's word on the invalidate route, or a report inferred on
// the WeChat-compatible routes (source metrics.SourceCompat). Before a
// refresh is spent on it, the leader checks the token with one cheap,
// side-effect-free WeChat call (get_api_domain_ip), single-flight with every
// other report of that token on any replica. When WeChat still accepts the
// token it is returned unchanged (nil error) and counted in
// wxbroker_false_reports_total; a check that cannot decide (WeChat busy or
// unreachable) trusts the report. Errors as Invalidate.
func (b *Broker) InvalidateUnproven(ctx context.Context, ns, appid, failedToken, source string) (Token, error) {
	return b.ReportFailure(ctx, ns, appid, Report{Token: failedToken, Source: source, Proof: Unproven})
}

// ReportFailure reports a token that failed, as r describes, and returns
// the token to use next: a new one after a conditional refresh, the current
// one when the report was stale, or the reported token itself when WeChat
// still accepts it (Unproven and MustConfirm). Concurrent reports of the
// same token on any replica cause at most one check and one WeChat fetch.
// Errors: ErrUnknownApp, ErrForceLimited, ErrNoToken (wrapped),
// ErrNotConfirmed (MustConfirm), or Charge's error (wrapped).
func (b *Broker) ReportFailure(ctx context.Context, ns, appid string, r Report) (Token, error) {
	e, ok := b.entry(ns, appid)
	if !ok {
		return Token{}, ErrUnknownApp
	}
	source := r.Source
	switch source {
	case metrics.SourceClient, metrics.SourceLogin, metrics.SourceProxy, metrics.SourceBroker, metrics.SourceCompat:
	default:
		source = metrics.SourceClient
	}
	it := e.token
	tok, accepted, err := b.rpt.conditionalRefresh(ctx, it, newClaim(r, time.Now()))
	if accepted {
		b.m.FalseReports.WithLabelValues(ns, appid, source).Inc()
	} else {
		b.m.InvalidCredential.WithLabelValues(ns, appid, source).Inc()
	}
	return tok, err
}
