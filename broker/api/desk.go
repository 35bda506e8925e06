package api

import (
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/wxbroker/wxbroker/metrics"
)

// desk is what every route group of the API shares and nothing else: who
// is calling (the keyring of the current view) and the record of a
// credential request (wxbroker_token_requests_total and the audit line).
// The route groups (reads.go, compat.go, admin.go) each hold the one desk of
// their API.
type desk struct {
	view  *atomic.Pointer[view] // the API's; a reload swaps what it points to
	m     *metrics.Metrics
	audit auditor
}

// authenticate returns the client whose key the request carries.
func (d *desk) authenticate(c echo.Context) (*client, error) {
	cl := d.view.Load().keys.lookup(bearer(c.Request().Header.Get(echo.HeaderAuthorization)))
	if cl == nil {
		return nil, errNoKey
	}
	return cl, nil
}

// authorize authenticates the request and checks that its client may read
// ns/appid. The allow check comes before any lookup, so a client learns
// nothing about apps it may not read.
func (d *desk) authorize(c echo.Context, ns, appid string) (*client, error) {
	cl, err := d.authenticate(c)
	if err != nil {
		return nil, err
	}
	if !cl.allows(ns, appid) {
		return cl, errForbidden
	}
	return cl, nil
}

// admin authenticates an admin client.
func (d *desk) admin(c echo.Context) (*client, error) {
	cl, err := d.authenticate(c)
	if err != nil {
		return nil, err
	}
	if !cl.admin {
		return nil, errAdminOnly
	}
	return cl, nil
}

// record counts a credential request and writes its audit line. token is the
// credential handed out (or, for a refused request, empty); only a short
// digest of it is logged.
func (d *desk) record(c echo.Context, event string, cl *client, ns, appid string, err error, token string) {
	result := metrics.RequestOK
	if err != nil {
		result = classify(err).code
	}
	d.count(ns, appid, result)
	d.auditLine(c, event, cl, ns, appid, result, token)
}

// count counts a credential request of ns/appid by result. Only configured
// namespaces and apps become label values; the rest count as "unknown".
func (d *desk) count(ns, appid, result string) {
	if ai := d.view.Load().apps[appKey{ns, appid}]; ai != nil {
		switch result {
		case metrics.RequestOK:
			ai.ok.Inc()
		case codeUnavailable:
			ai.unavailable.Inc()
		default:
			d.m.TokenRequests.WithLabelValues(ns, appid, result).Inc()
		}
		return
	}
	if !d.view.Load().nsKnown[ns] {
		ns = unknownNamespace
	}
	d.m.TokenRequests.WithLabelValues(ns, unknownApp, result).Inc()
}

func (d *desk) auditLine(c echo.Context, event string, cl *client, ns, appid, result, token string) {
	d.auditRef(c, event, cl, ns, appid, result, tokenRef(token))
}

// auditRef is auditLine with the token's reference already computed.
func (d *desk) auditRef(c echo.Context, event string, cl *client, ns, appid, result, ref string) {
	name := ""
	if cl != nil {
		name = cl.name
	}
	d.audit.line(time.Now(), event, name, ns, appid, result, ref, c.Request().RemoteAddr)
}

// auditRead writes the audit line of a successful token read of ai by cl.
// With the default audit log, the line's fields up to the token reference
// are encoded once per client and app and then copied (client.auditFields).
func (d *desk) auditRead(c echo.Context, now time.Time, cl *client, ai *appInfo, ref string) {
	if d.audit.log == nil {
		d.auditRef(c, eventAccessToken, cl, ai.ns, ai.appid, metrics.RequestOK, ref)
		return
	}
	d.audit.log.linePrefixed(now, cl.auditFields(d.audit.log, ai), ref, c.Request().RemoteAddr)
}
