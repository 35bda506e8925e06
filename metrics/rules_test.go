package metrics_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/wxbroker/wxbroker/metrics"
)

type ruleFile struct {
	Spec struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	} `yaml:"spec"`
}

// TestAlertRules checks deploy/prometheus-rules.yaml against the metrics the
// code registers and the runbook: every metric an alert uses exists, every
// alert has for:, a summary and a runbook section, and the alerts DESIGN §8
// asks for are there.
func TestAlertRules(t *testing.T) {
	data, err := os.ReadFile("../deploy/prometheus-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(data, &rf); err != nil {
		t.Fatalf("parse rules: %v", err)
	}
	runbook, err := os.ReadFile("../docs/RUNBOOK.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]bool{}
	for _, line := range strings.Split(string(runbook), "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			sections[strings.ToLower(strings.TrimSpace(h))] = true
		}
	}

	registered := registeredNames(t)
	metricRef := regexp.MustCompile(`wxbroker_[a-z_]+`)
	alerts := map[string]bool{}
	for _, g := range rf.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = true
			if r.For == "" {
				t.Errorf("alert %s has no for:", r.Alert)
			}
			if r.Labels["severity"] == "" {
				t.Errorf("alert %s has no severity label", r.Alert)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("alert %s has no summary", r.Alert)
			}
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], "docs/RUNBOOK.md#")
			if !ok || !sections[anchor] {
				t.Errorf("alert %s: runbook_url %q names no section of docs/RUNBOOK.md", r.Alert, r.Annotations["runbook_url"])
			}
			for _, m := range metricRef.FindAllString(r.Expr, -1) {
				if !registered[m] {
					t.Errorf("alert %s uses %s, which metrics.New does not register", r.Alert, m)
				}
			}
		}
	}
	// DESIGN §8: 40001 rate per app, refresh failing, token near expiry, no
	// leader, more than one leader, leader flapping, quota above 80 %.
	for _, want := range []string{
		"WxbrokerInvalidCredentialRate", "WxbrokerRefreshFailing", "WxbrokerTokenNearExpiry",
		"WxbrokerNoLeader", "WxbrokerSplitLeader", "WxbrokerLeaderFlapping", "WxbrokerQuotaHigh",
	} {
		if !alerts[want] {
			t.Errorf("alert %s missing from deploy/prometheus-rules.yaml", want)
		}
	}
}

// registeredNames returns every series name metrics.New exposes, histogram
// series included.
func registeredNames(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.TokenRefresh.WithLabelValues("n", "a", "k", "r")
	m.TokenRefreshDuration.WithLabelValues("n", "k")
	m.TokenExpiry.WithLabelValues("n", "a", "k")
	m.TokenLastRefreshSuccess.WithLabelValues("n", "a", "k")
	m.InvalidCredential.WithLabelValues("n", "a", "s")
	m.ExternalInvalidation.WithLabelValues("n", "a")
	m.WeChatErrors.WithLabelValues("n", "a", "api", "e")
	m.WeChatQuotaUsed.WithLabelValues("n", "a", "api")
	m.TokenRequests.WithLabelValues("n", "r")
	m.Login.WithLabelValues("f", "r")
	m.HTTPRequestDuration.WithLabelValues("l", "r", "c")
	m.FalseReports.WithLabelValues("n", "a", "s")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		n := mf.GetName()
		names[n] = true
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			names[n+s] = true
		}
	}
	return names
}
