package api

import (
	"net/http"
	"time"

	"golang.org/x/time/rate"
)

// A failure report (the invalidate route) may spend the app's forced-refresh
// budget (force_min_interval, force_daily_cap: 20 a day for stable tokens),
// so reading an app does not imply reporting on it: a client reports only
// with clients[].invalidate (default true, so existing set-ups keep
// working), and at most clients[].invalidate_per_minute times a minute (a
// token bucket of that size, for all its apps together). The limit is per
// replica; a fleet of n replicas behind a load balancer allows up to n
// times as much, still far from the force budget's own bounds.

var (
	errNoInvalidate = &apiError{http.StatusForbidden, codeForbidden,
		"this client key may not report tokens (clients[].invalidate is false)"}
	errReportLimit = &apiError{http.StatusTooManyRequests, codeTooManyRequests,
		"this client reports failed tokens too often (clients[].invalidate_per_minute); keep using the current token"}
)

func newReportLimiter(perMinute int) *rate.Limiter {
	return rate.NewLimiter(rate.Every(time.Minute/time.Duration(perMinute)), perMinute)
}

// mayReport checks a client's permission and rate before a report is read.
func (c *client) mayReport() error {
	if !c.invalidate {
		return errNoInvalidate
	}
	if !c.reports.Allow() {
		return errReportLimit
	}
	return nil
}
