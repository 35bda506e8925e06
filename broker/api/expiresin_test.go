package api

import (
	"strings"
	"testing"
	"time"
)

// TestSecondsLeftNeverZeroWhileValid: a 200 answer never says
// "expires_in": 0 for a credential that has not expired — the broker serves
// nothing with less than a second left, and the moment between its check
// and the encoder's clock read must not round down to 0.
func TestSecondsLeftNeverZeroWhileValid(t *testing.T) {
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	tests := []struct {
		left time.Duration
		want int64
	}{
		{7200 * time.Second, 7200},
		{1500 * time.Millisecond, 1},
		{999 * time.Millisecond, 1},
		{time.Millisecond, 1},
		{0, 0},
		{-time.Second, 0},
	}
	for _, tc := range tests {
		if got := secondsLeft(now.Add(tc.left), now); got != tc.want {
			t.Errorf("secondsLeft(now+%s) = %d; want %d", tc.left, got, tc.want)
		}
	}
	for _, enc := range []func() []byte{
		func() []byte { return appendTokenJSON(nil, "t", now.Add(999*time.Millisecond), now, 1) },
		func() []byte { return appendTicketJSON(nil, "t", now.Add(999*time.Millisecond), now) },
		func() []byte { return appendWeChatTokenJSON(nil, "t", now.Add(999*time.Millisecond), now) },
		func() []byte { return appendWeChatTicketJSON(nil, "t", now.Add(999*time.Millisecond), now) },
	} {
		if got := string(enc()); !containsExpiresIn1(got) {
			t.Errorf("encoded answer %s; want \"expires_in\":1", got)
		}
	}
}

func containsExpiresIn1(s string) bool {
	return strings.Contains(s, `"expires_in":1,`) || strings.Contains(s, `"expires_in":1}`)
}
