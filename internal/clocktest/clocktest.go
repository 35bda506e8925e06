// Package clocktest provides a clock that tests move by hand, to inject
// wherever the code under test takes a `Now func() time.Time` (the broker,
// the login server, the WeChat simulator), so that expiry tests never sleep.
package clocktest

import (
	"sync"
	"time"
)

// Clock is a controllable time source. It stands still until Advance or Set
// moves it. Its methods are safe for concurrent use; the zero value is not
// usable, build one with New.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a Clock that reads t0 until it is moved.
func New(t0 time.Time) *Clock {
	return &Clock{now: t0}
}

// Now returns the clock's current time. Its method value c.Now fits every
// `Now func() time.Time` option.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d (backward if d is negative).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Set moves the clock to t, forward or backward.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}
