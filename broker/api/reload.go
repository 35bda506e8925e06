package api

import (
	"errors"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
)

// view is what the API takes from the configuration's namespaces and
// clients: who may call (the keyring), the configured apps and their
// secrets (gateway). It is immutable; a reload builds the next one and the
// API swaps it whole, so a request sees one configuration from start to end.
type view struct {
	keys    *keyring
	nsOfApp map[string]string // appid → the one namespace configuring it
	apps    map[appKey]*appInfo
	nsKnown map[string]bool   // configured namespaces
	secrets map[appKey]string // AppSecrets for the gateway; never logged
}

// newView builds the view of cfg. prev (nil at start-up) lends its per-app
// state (token memos, metric children) to the apps both configure and its
// report limiters to the clients whose key and rate did not change, so a
// reload does not hand a client a fresh report budget.
func newView(cfg *config.Config, m *metrics.Metrics, prev *view) (*view, error) {
	keys, err := newKeyring(cfg)
	if err != nil {
		return nil, err
	}
	v := &view{
		keys:    keys,
		nsOfApp: map[string]string{},
		apps:    map[appKey]*appInfo{},
		nsKnown: map[string]bool{},
		secrets: map[appKey]string{},
	}
	for _, ns := range cfg.NamespaceNames() {
		v.nsKnown[ns] = true
	}
	// The ok and unavailable series of every app exist from start-up, so the
	// first 503 of an app shows as an increase (WxbrokerAppUnavailable).
	for _, ref := range cfg.Apps() {
		k := appKey{ref.Namespace, ref.App.AppID}
		v.nsOfApp[ref.App.AppID] = ref.Namespace
		v.secrets[k] = ref.App.Secret.Reveal()
		if prev != nil && prev.apps[k] != nil {
			v.apps[k] = prev.apps[k]
			continue
		}
		v.apps[k] = &appInfo{
			ns: ref.Namespace, appid: ref.App.AppID,
			ok:          m.TokenRequests.WithLabelValues(ref.Namespace, ref.App.AppID, metrics.RequestOK),
			unavailable: m.TokenRequests.WithLabelValues(ref.Namespace, ref.App.AppID, codeUnavailable),
			reports:     newReportLimiter(config.DefaultInvalidatePerMinute),
		}
		// The gateway retries a service still meets 40001 after page on the
		// first one: they exist at 0 from the moment the app is configured
		// (a counter first seen at 1 has no increase).
		for _, r := range []string{metrics.RetryFailed, metrics.RetryLimited, metrics.RetryNoToken} {
			m.Gateway.Retries.WithLabelValues(ref.Namespace, ref.App.AppID, r)
		}
	}
	if prev != nil {
		for d, c := range v.keys.byDigest {
			if old := prev.keys.byDigest[d]; old != nil && old.name == c.name && old.reports.Limit() == c.reports.Limit() {
				c.reports = old.reports
			}
		}
	}
	return v, nil
}

// PrepareReload builds what the API takes from cfg (clients and apps; cfg
// passed config.Validate) and returns the function that puts it in place.
// Nothing changes before commit: an error (a client entry the API cannot
// use) leaves everything as it was. After commit the next request is
// checked against the new clients: a removed key is refused at once, a new
// one accepted; a removed app answers 404 and its request series are
// deleted.
func (a *API) PrepareReload(cfg *config.Config) (commit func(), err error) {
	if cfg == nil {
		return nil, errors.New("api: PrepareReload needs a configuration")
	}
	prev := a.view.Load()
	next, err := newView(cfg, a.m, prev)
	if err != nil {
		return nil, err
	}
	return func() {
		a.view.Store(next)
		for k := range prev.apps {
			if next.apps[k] == nil {
				a.m.TokenRequests.DeletePartialMatch(map[string]string{"wx_namespace": k.ns, "appid": k.appid})
				a.m.Gateway.Retries.DeletePartialMatch(map[string]string{"wx_namespace": k.ns, "appid": k.appid})
			}
		}
	}, nil
}
