package api

import (
	"net/http"
	"time"

	"golang.org/x/time/rate"
)

// A failure report (the invalidate route, or a 40001 the gateway meets) may
// spend the app's forced-refresh budget (force_min_interval,
// force_daily_cap: 20 a day for stable tokens), so reading an app does not
// imply reporting on it: a client reports on the invalidate route only with
// clients[].invalidate (default true, so existing set-ups keep working). A
// gateway caller without it still has its call re-sent, but only when the
// broker's check with WeChat confirms the token failed (broker.MustConfirm).
//
// clients[].invalidate_per_minute (a token bucket of that size, for all the
// client's apps together) bounds what a client's reports cost WeChat: only
// a report that is about to cause a check of the token or a forced fetch
// takes from it (broker.Report.Charge). A report that joins one in
// progress, names a token that is no longer current or is answered by a
// fresh verdict costs nothing and is never refused, so a burst of reports
// of one failed token costs at most one per replica. Gateway callers that
// present a token instead of a client key share a bucket of the default
// size per app. The limit is per replica; a fleet of n replicas behind a
// load balancer allows up to n times as much, still far from the force
// budget's own bounds.

var (
	errNoInvalidate = &apiError{http.StatusForbidden, codeForbidden,
		"this client key may not report tokens (clients[].invalidate is false)"}
	errReportLimit = &apiError{http.StatusTooManyRequests, codeTooManyRequests,
		"this client reports failed tokens too often (clients[].invalidate_per_minute); keep using the current token"}
)

func newReportLimiter(perMinute int) *rate.Limiter {
	return rate.NewLimiter(rate.Every(time.Minute/time.Duration(perMinute)), perMinute)
}

// mayReport checks a client's permission before a report is read.
func (c *client) mayReport() error {
	if !c.invalidate {
		return errNoInvalidate
	}
	return nil
}

// chargeTo returns the Charge of a report paid from l: one token, or
// errReportLimit when none is left.
func chargeTo(l *rate.Limiter) func() error {
	return func() error {
		if !l.Allow() {
			return errReportLimit
		}
		return nil
	}
}
