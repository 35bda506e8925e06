package broker

import (
	"time"

	"github.com/wxbroker/wxbroker/config"
)

// Timings for tests whose subject is not a timeout. testConfig's 400 ms
// WeChat timeout (under a 1.5 s lease) is exceeded by a plain call to the
// simulator when a 2-core CI machine is loaded and the tests run with -race:
// the call then counts as a failure and is retried, and assertions about
// call counts or generations fail for a reason the test is not about.
const (
	tolerantWeChatTimeout = 5 * time.Second
	tolerantLockTTL       = 15 * time.Second
	tolerantRenew         = time.Second
)

// loadTolerant gives cfg a WeChat timeout no loaded machine reaches by
// accident, and a lease long enough for a credential call to start under it
// (a leader calls WeChat only while more lease than the timeout is left).
// Use it in tests that do not stop or pause the leader.
func loadTolerant(cfg *config.Config) *config.Config {
	cfg.WeChat.Timeout = tolerantWeChatTimeout
	cfg.Leader = config.Leader{LockTTL: tolerantLockTTL, RenewInterval: tolerantRenew}
	return cfg
}
