package config

import "time"

// The refresh settings' derived durations, computed here once for every
// place that schedules a refresh or exports when one is due.

// StableLead returns when a stable access token of lifetime life falls due:
// lead before its expiry, plus up to jitter later. WeChat hands out the
// successor of a stable token only within its last stable_rotation_window w,
// so lead is 4/5 of w and jitter is refresh.jitter of w, at most w/2. ok is
// false when w is not shorter than life; such a token is due like a classic
// one (see Lead).
func (r *Refresh) StableLead(life time.Duration) (lead, jitter time.Duration, ok bool) {
	w := r.StableRotationWindow
	if w <= 0 || w >= life {
		return 0, 0, false
	}
	return w * 4 / 5, min(r.Jitter.Of(w), w/2), true
}

// Lead returns when a classic access token or a ticket of lifetime life
// falls due: before (refresh.before_expiry of life) before its expiry, minus
// up to jitter (refresh.jitter of life) earlier.
func (r *Refresh) Lead(life time.Duration) (before, jitter time.Duration) {
	return r.BeforeExpiry.Of(life), r.Jitter.Of(life)
}
