package deploy_test

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite kubernetes/prometheusrule.yaml from prometheus/rules.yaml")

const (
	rulesFile      = "prometheus/rules.yaml"
	rulesTestFile  = "prometheus/rules_test.yaml"
	promRuleFile   = "kubernetes/prometheusrule.yaml"
	runbookFile    = "../docs/RUNBOOK.md"
	runbookBaseURL = "https://github.com/wxbroker/wxbroker/blob/main/docs/RUNBOOK.md"
)

type rule struct {
	Record      string            `yaml:"record"`
	Alert       string            `yaml:"alert"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type ruleGroups struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []rule `yaml:"rules"`
	} `yaml:"groups"`
}

func loadRules(t *testing.T) ruleGroups {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rg ruleGroups
	if err := yaml.Unmarshal(data, &rg); err != nil {
		t.Fatalf("parse %s: %v", rulesFile, err)
	}
	return rg
}

func alerts(t *testing.T) []rule {
	t.Helper()
	var out []rule
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

// promRuleHeader is the part of kubernetes/prometheusrule.yaml before the
// groups, which are prometheus/rules.yaml's, indented under spec.
const promRuleHeader = `# GENERATED from ../prometheus/rules.yaml (go test ./deploy/ -run
# TestPrometheusRuleMatchesRulesFile -update): edit that file, not this one.
# The wxbroker alerts for the Prometheus Operator. release: set it to the Helm
# release name of your kube-prometheus-stack (its default ruleSelector).
# runbook_url: the component ../kubernetes/runbook-url sets its base.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: wxbroker
  labels:
    app.kubernetes.io/name: wxbroker
    release: kube-prometheus-stack
spec:
`

// TestPrometheusRuleMatchesRulesFile keeps the PrometheusRule and the plain
// rules file that promtool checks identical: the PrometheusRule's spec is
// the rules file's groups, byte for byte.
func TestPrometheusRuleMatchesRulesFile(t *testing.T) {
	plain, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(plain, []byte("\ngroups:"))
	if i < 0 {
		t.Fatalf("%s has no top-level groups:", rulesFile)
	}
	var want bytes.Buffer
	want.WriteString(promRuleHeader)
	for _, line := range strings.SplitAfter(string(plain[i+1:]), "\n") {
		if strings.TrimSpace(line) != "" {
			want.WriteString("  ")
		}
		want.WriteString(line)
	}
	if *update {
		if err := os.WriteFile(promRuleFile, want.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(promRuleFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("%s differs from %s: run go test ./deploy/ -run TestPrometheusRuleMatchesRulesFile -update", promRuleFile, rulesFile)
	}
}

// TestAlertRules checks the rules against the metrics the code registers and
// the runbook: every metric a rule uses exists, every alert has for:, a
// severity, a summary without raw floats and an absolute runbook_url naming
// a section of docs/RUNBOOK.md, and the alerts operators rely on are there.
func TestAlertRules(t *testing.T) {
	sections := runbookSections(t)
	registered := registeredNames(t)
	metricRef := regexp.MustCompile(`wxbroker_[a-z_]+`)
	names := map[string]bool{}
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			t.Run(name, func(t *testing.T) {
				for _, m := range metricRef.FindAllString(r.Expr, -1) {
					if !registered[m] {
						t.Errorf("uses %s, which metrics.New does not register", m)
					}
				}
				if r.Alert == "" {
					return
				}
				names[r.Alert] = true
				if r.For == "" {
					t.Error("no for:")
				}
				if r.Labels["severity"] != "critical" && r.Labels["severity"] != "warning" {
					t.Errorf("severity %q, want critical or warning", r.Labels["severity"])
				}
				sum := r.Annotations["summary"]
				if sum == "" {
					t.Error("no summary")
				}
				if r.Annotations["description"] == "" {
					t.Error("no description (kube-prometheus convention: summary in one line, description with what it means)")
				}
				if strings.Contains(sum, "{{ $value }}") {
					t.Errorf("summary %q prints $value raw; use humanize, humanizeDuration, humanizePercentage or printf", sum)
				}
				anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookBaseURL+"#")
				if !ok || sections[anchor] == "" {
					t.Errorf("runbook_url %q is not %s#<a section of docs/RUNBOOK.md>", r.Annotations["runbook_url"], runbookBaseURL)
				}
				if strings.Contains(r.Expr, "wx_namespace") && !strings.Contains(r.Expr, "job, namespace") {
					t.Errorf("groups by wx_namespace without (job, namespace): deployments would mix")
				}
			})
		}
	}
	for _, want := range []string{
		"WxbrokerInvalidCredentialFastBurn", "WxbrokerInvalidCredentialSlowBurn",
		"WxbrokerNamespaceInvalidCredentialFastBurn", "WxbrokerNamespaceInvalidCredentialSlowBurn",
		"WxbrokerGatewayRetryFailing", "WxbrokerGatewayUnavailable", "WxbrokerGatewayUnreachable", "WxbrokerGatewaySlow",
		"WxbrokerRedisUnreachable", "WxbrokerRedisSlow", "WxbrokerTLSCertificateExpiry", "WxbrokerConfigReloadFailed", "WxbrokerConfigDrift",
		"WxbrokerRefreshFailing", "WxbrokerRefreshLate", "WxbrokerTokenNearExpiry",
		"WxbrokerNoLeader", "WxbrokerSplitLeader", "WxbrokerLeaderFlapping", "WxbrokerDown", "WxbrokerQuotaHigh",
		"WxbrokerForcedRefreshBudgetLow", "WxbrokerConfigError", "WxbrokerExternalInvalidation", "WxbrokerAppUnavailable",
		"WxbrokerVerifyTicketStale", "WxbrokerVerifyTicketExpiring", "WxbrokerComponentTokenExpiring",
		"WxbrokerAuthorizersNeedReauthorization", "WxbrokerAuthorizersOverdue", "WxbrokerAuthorizerRefreshFailing",
		"WxbrokerOpenPlatformEventsRefused", "WxbrokerOpenPlatformEventsAllRefused",
	} {
		if !names[want] {
			t.Errorf("alert %s missing from %s", want, rulesFile)
		}
	}
}

// TestRunbookMatchesRules keeps docs/RUNBOOK.md word for word with the
// rules: every alert's section quotes its severity, its for: and its
// expression exactly.
func TestRunbookMatchesRules(t *testing.T) {
	sections := runbookSections(t)
	for _, a := range alerts(t) {
		t.Run(a.Alert, func(t *testing.T) {
			sec := sections[strings.ToLower(a.Alert)]
			if sec == "" {
				t.Fatalf("docs/RUNBOOK.md has no section ## %s", a.Alert)
			}
			if want := "Severity " + a.Labels["severity"] + ", `for: " + a.For + "`:"; !strings.Contains(sec, want) {
				t.Errorf("section %s does not say %q", a.Alert, want)
			}
			if want := "```promql\n" + strings.TrimRight(a.Expr, "\n") + "\n```"; !strings.Contains(sec, want) {
				t.Errorf("section %s does not quote the expression as the rule has it:\n%s", a.Alert, want)
			}
		})
	}
}

// TestMetricsReference checks docs/METRICS.md: every metric the code
// registers has a row with its type and exactly its labels.
func TestMetricsReference(t *testing.T) {
	data, err := os.ReadFile("../docs/METRICS.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(string(data), "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`wxbroker_") {
			continue
		}
		rows[strings.Trim(strings.TrimSpace(cells[1]), "`")] = cells[2:4]
	}
	for name, info := range registered(t) {
		if info.typ == "series" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			row, ok := rows[name]
			if !ok {
				t.Fatalf("docs/METRICS.md has no row for %s", name)
			}
			if got := strings.TrimSpace(row[0]); got != info.typ {
				t.Errorf("type %q; the code registers a %s", got, info.typ)
			}
			var labels []string
			for _, l := range strings.Split(row[1], ",") {
				if l = strings.Trim(strings.TrimSpace(l), "`"); l != "" && l != "—" {
					labels = append(labels, l)
				}
			}
			sort.Strings(labels)
			if strings.Join(labels, ",") != strings.Join(info.labels, ",") {
				t.Errorf("labels %v; the code uses %v", labels, info.labels)
			}
		})
	}
}

// TestEveryAlertHasUnitTests checks that rules_test.yaml makes every alert
// fire (a non-empty exp_alerts) and stay silent (an empty one) at least once.
func TestEveryAlertHasUnitTests(t *testing.T) {
	data, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	var tf struct {
		Tests []struct {
			Name  string `yaml:"name"`
			Cases []struct {
				Alert string `yaml:"alertname"`
				Exp   []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(data, &tf); err != nil {
		t.Fatal(err)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tg := range tf.Tests {
		for _, c := range tg.Cases {
			if len(c.Exp) > 0 {
				fires[c.Alert] = true
			} else {
				silent[c.Alert] = true
			}
		}
	}
	for _, a := range alerts(t) {
		t.Run(a.Alert, func(t *testing.T) {
			if !fires[a.Alert] {
				t.Errorf("%s never makes it fire", rulesTestFile)
			}
			if !silent[a.Alert] {
				t.Errorf("%s never checks that it stays silent", rulesTestFile)
			}
		})
	}
}

// TestPromtool runs promtool check rules and the rule unit tests (make test
// runs them too). promtool comes with make deps (Debian package prometheus).
func TestPromtool(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", rulesFile},
		{"test", "rules", rulesTestFile},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			out, err := exec.Command(bin, args...).CombinedOutput()
			if err != nil {
				t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
}

// TestKustomizeBuild renders the base and an overlay that uses the
// runbook-url component (kubectl kustomize, when kubectl is installed): the
// base points every runbook_url at this repository, the overlay's base URL
// reaches every alert, and the local-config ConfigMap is never applied.
func TestKustomizeBuild(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed: the kustomize rendering is not checked")
	}
	abs, err := filepath.Abs("kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	overlay := t.TempDir()
	base, err := filepath.Rel(overlay, abs)
	if err != nil {
		t.Fatal(err)
	}
	cm, err := os.ReadFile("kubernetes/runbook-url/runbook.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const ours = "https://wiki.example.com/wxbroker/RUNBOOK"
	cm = regexp.MustCompile(`(?m)^  base: .*$`).ReplaceAll(cm, []byte("  base: "+ours))
	writeFile(t, filepath.Join(overlay, "runbook.yaml"), cm)
	writeFile(t, filepath.Join(overlay, "kustomization.yaml"), []byte(
		"resources: ["+filepath.ToSlash(base)+", runbook.yaml]\ncomponents: ["+filepath.ToSlash(base)+"/runbook-url]\n"))

	for _, tc := range []struct {
		name, dir, url string
	}{
		{"base", "kubernetes", runbookBaseURL},
		{"overlay with runbook-url", overlay, ours},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(kubectl, "kustomize", tc.dir).CombinedOutput()
			if err != nil {
				t.Fatalf("kubectl kustomize %s: %v\n%s", tc.dir, err, out)
			}
			s := string(out)
			if strings.Contains(s, "name: wxbroker-runbook") {
				t.Error("the runbook ConfigMap (local-config) is in the output")
			}
			if n, want := strings.Count(s, "runbook_url: "+tc.url+"#"), len(alerts(t)); n != want {
				t.Errorf("%d runbook_url values start with %s#; want %d", n, tc.url, want)
			}
			for _, kind := range []string{"PrometheusRule", "ServiceMonitor"} {
				if !strings.Contains(s, "kind: "+kind) {
					t.Errorf("no %s in the output", kind)
				}
			}
		})
	}
}

// promtool returns the promtool binary, failing the test when it is missing.
func promtool(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run make deps (it installs the Debian package prometheus, which ships promtool)")
	}
	return bin
}

// runbookSections returns docs/RUNBOOK.md's "## " sections by their GitHub
// anchor (the lower-cased heading), with their text.
func runbookSections(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.FromSlash(runbookFile))
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{}
	cur := ""
	for _, line := range strings.Split(string(data), "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			cur = strings.ToLower(strings.TrimSpace(h))
			sections[cur] = ""
			continue
		}
		if cur != "" {
			sections[cur] += line + "\n"
		}
	}
	return sections
}
