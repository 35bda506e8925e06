package api

import "go.uber.org/zap"

// notReadyReason is what /readyz answers when not ready. The cause (a Redis
// error with addresses, say) is logged, not answered: /readyz is reachable
// without a key.
const notReadyReason = "no valid access token can be served; see the broker's log and /v1/status"

// notReady logs why /readyz fails, once per change of cause: probes poll it
// every few seconds.
func (a *API) notReady(err error) {
	msg := err.Error()
	if p := a.lastNotReady.Load(); p != nil && *p == msg {
		return
	}
	a.lastNotReady.Store(&msg)
	a.log.Warn("not ready", zap.Error(err))
}
