// Package waittest waits in tests on a condition with a deadline, instead of
// sleeping and hoping.
package waittest

import (
	"testing"
	"time"
)

// For polls cond every 20 ms until it holds and returns how long that took;
// it fails the test naming what it waited for if timeout passes first.
func For(t testing.TB, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}
