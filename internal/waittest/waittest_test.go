package waittest

import (
	"testing"
	"time"
)

func TestForReturnsOnceTheConditionHolds(t *testing.T) {
	deadline := time.Now().Add(50 * time.Millisecond)
	waited := For(t, "the deadline", 5*time.Second, func() bool { return time.Now().After(deadline) })
	if waited < 40*time.Millisecond || waited > 4*time.Second {
		t.Errorf("For waited %s; want about 50ms", waited)
	}
}
