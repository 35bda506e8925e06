package deploy_test

import (
	"os/exec"
	"strings"
	"testing"
)

const alertmanagerFile = "alertmanager/alertmanager.yaml"

// TestAlertmanagerConfig checks the example Alertmanager configuration with
// amtool (Debian package prometheus-alertmanager, installed by make deps):
// it loads, and each alert reaches the receiver its situation calls for.
func TestAlertmanagerConfig(t *testing.T) {
	bin, err := exec.LookPath("amtool")
	if err != nil {
		t.Fatal("amtool not found: run make deps (it installs the Debian package prometheus-alertmanager, which ships amtool)")
	}
	if out, err := exec.Command(bin, "check-config", alertmanagerFile).CombinedOutput(); err != nil {
		t.Fatalf("amtool check-config %s: %v\n%s", alertmanagerFile, err, out)
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   string
	}{
		{"a wrong AppSecret in prod pages", []string{"alertname=WxbrokerConfigError", "severity=critical", "job=wxbroker", "namespace=wx-prod", "wx_namespace=prod", "appid=wx04a7af67c8f47620"}, "wxbroker-page"},
		{"the post-mortem pattern in prod pages", []string{"alertname=WxbrokerInvalidCredentialFastBurn", "severity=critical", "job=wxbroker", "namespace=wx-prod", "wx_namespace=prod", "appid=wx04a7af67c8f47620"}, "wxbroker-page"},
		{"a slow leak in prod goes to chat", []string{"alertname=WxbrokerInvalidCredentialSlowBurn", "severity=warning", "job=wxbroker", "namespace=wx-prod", "wx_namespace=prod", "appid=wx04a7af67c8f47620"}, "wxbroker-chat"},
		{"a critical alert of wxbroker namespace staging opens a ticket", []string{"alertname=WxbrokerConfigError", "severity=critical", "job=wxbroker", "namespace=wx-prod", "wx_namespace=staging", "appid=wx04a7af67c8f47620"}, "wxbroker-ticket"},
		{"a critical alert of a staging cluster namespace opens a ticket", []string{"alertname=WxbrokerDown", "severity=critical", "job=wxbroker", "namespace=wx-staging"}, "wxbroker-ticket"},
		{"a deployment down in prod pages", []string{"alertname=WxbrokerDown", "severity=critical", "job=wxbroker", "namespace=wx-prod"}, "wxbroker-page"},
		{"an authorizer needing re-authorization in prod pages", []string{"alertname=WxbrokerAuthorizersNeedReauthorization", "severity=critical", "job=wxbroker", "namespace=wx-prod", "wx_namespace=prod", "component_appid=wx5a3c1e9b7d2f4a6c", "appid=wx5a3c1e9b7d2f4a6c"}, "wxbroker-page"},
		{"a stale verify ticket in prod goes to chat", []string{"alertname=WxbrokerVerifyTicketStale", "severity=warning", "job=wxbroker", "namespace=wx-prod", "wx_namespace=prod", "component_appid=wx5a3c1e9b7d2f4a6c", "appid=wx5a3c1e9b7d2f4a6c"}, "wxbroker-chat"},
		{"an expiring verify ticket in staging opens a ticket", []string{"alertname=WxbrokerVerifyTicketExpiring", "severity=critical", "job=wxbroker", "namespace=wx-prod", "wx_namespace=staging", "component_appid=wx5a3c1e9b7d2f4a6c", "appid=wx5a3c1e9b7d2f4a6c"}, "wxbroker-ticket"},
		{"a TLS certificate 14 days ahead goes to chat", []string{"alertname=WxbrokerTLSCertificateExpiry", "severity=warning", "job=wxbroker", "namespace=wx-prod"}, "wxbroker-chat"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"config", "routes", "test", "--config.file=" + alertmanagerFile, "--verify.receivers=" + tc.want}, tc.labels...)
			out, err := exec.Command(bin, args...).Output()
			if err != nil {
				t.Errorf("amtool %s: %v; routed to %q, want %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)), tc.want)
			}
		})
	}
}
