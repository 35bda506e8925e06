package config

import (
	"testing"
	"time"
)

func TestRefreshLeads(t *testing.T) {
	r := Default().Refresh // before_expiry 25%, jitter 10%, stable_rotation_window 5m
	tests := []struct {
		name               string
		window, life       time.Duration
		lead, jitter       time.Duration
		stable             bool
		before, lifeJitter time.Duration
	}{
		{"default window", 5 * time.Minute, 2 * time.Hour, 4 * time.Minute, 30 * time.Second, true, 30 * time.Minute, 12 * time.Minute},
		{"window as long as life", 2 * time.Hour, 2 * time.Hour, 0, 0, false, 30 * time.Minute, 12 * time.Minute},
		{"no window", 0, 2 * time.Hour, 0, 0, false, 30 * time.Minute, 12 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.StableRotationWindow = tt.window
			lead, jitter, ok := r.StableLead(tt.life)
			if lead != tt.lead || jitter != tt.jitter || ok != tt.stable {
				t.Errorf("StableLead(%s) = %s, %s, %v; want %s, %s, %v", tt.life, lead, jitter, ok, tt.lead, tt.jitter, tt.stable)
			}
			before, lj := r.Lead(tt.life)
			if before != tt.before || lj != tt.lifeJitter {
				t.Errorf("Lead(%s) = %s, %s; want %s, %s", tt.life, before, lj, tt.before, tt.lifeJitter)
			}
		})
	}
	r.StableRotationWindow = 5 * time.Minute
	r.Jitter = Portion{Fraction: 0.9}
	if _, jitter, _ := r.StableLead(2 * time.Hour); jitter != 150*time.Second {
		t.Errorf("StableLead jitter with jitter 90%% = %s; want at most half the window (2m30s)", jitter)
	}
}
