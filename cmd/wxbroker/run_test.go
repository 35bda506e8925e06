package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/logtest"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = dispatch(t.Context(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
	}{
		{nil, exitUsage},
		{[]string{"help"}, exitOK},
		{[]string{"--help"}, exitOK},
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"help", "frobnicate"}, exitUsage},
	}
	for _, tt := range tests {
		code, stdout, stderr := runCmd(t, tt.args...)
		if code != tt.wantCode {
			t.Errorf("wxbroker %v exited %d; want %d", tt.args, code, tt.wantCode)
		}
		for _, name := range []string{"sim", "doctor", "explain", "help"} {
			if !strings.Contains(stdout+stderr, "\n  "+name+" ") {
				t.Errorf("wxbroker %v does not list %s:\n%s%s", tt.args, name, stdout, stderr)
			}
		}
	}
	code, stdout, _ := runCmd(t, "help", "sim")
	if code != exitOK || !strings.Contains(stdout, "-overlap") {
		t.Errorf("wxbroker help sim = %d, %q; want the sim flags", code, stdout)
	}
}

func TestExplain(t *testing.T) {
	code, stdout, stderr := runCmd(t, "explain", "40164")
	if code != exitOK {
		t.Fatalf("explain 40164 exited %d: %s", code, stderr)
	}
	h, _ := wechat.Explain(40164)
	for _, want := range []string{"40164", "中文", "English", h.Title, h.ZH, h.EN, h.CauseZH, h.CauseEN, h.FixZH, h.FixEN} {
		if !strings.Contains(stdout, want) {
			t.Errorf("explain 40164 lacks %q:\n%s", want, stdout)
		}
	}

	code, _, stderr = runCmd(t, "explain", "12345")
	if code != exitFailure || !strings.Contains(stderr, "12345") || !strings.Contains(stderr, "rid") {
		t.Errorf("explain 12345 = %d, %q; want exit 1 and how to find the rid", code, stderr)
	}
	if code, _, _ := runCmd(t, "explain", "forty"); code != exitUsage {
		t.Errorf("explain forty exited %d; want %d", code, exitUsage)
	}
	if code, _, _ := runCmd(t, "explain"); code != exitUsage {
		t.Errorf("explain without code exited %d; want %d", code, exitUsage)
	}

	code, stdout, _ = runCmd(t, "explain", "--list")
	if code != exitOK {
		t.Fatalf("explain --list exited %d", code)
	}
	for _, c := range wechat.KnownCodes() {
		if !regexp.MustCompile(fmt.Sprintf(`(?m)^ *%d  `, c)).MatchString(stdout) {
			t.Errorf("explain --list lacks %d", c)
		}
	}
}

func TestDoctorListsEveryProblem(t *testing.T) {
	path := "../../config/testdata/bad/many_problems.yaml"
	_, loadErr := config.Load(path)
	if loadErr == nil {
		t.Fatalf("config.Load(%s) succeeded", path)
	}
	code, stdout, _ := runCmd(t, "doctor", "--config", path)
	if code != exitFailure {
		t.Errorf("doctor exited %d; want %d", code, exitFailure)
	}
	lines := strings.Split(loadErr.Error(), "\n")[1:]
	if len(lines) < 5 {
		t.Fatalf("many_problems.yaml has only %d problems", len(lines))
	}
	for _, l := range lines {
		msg, fix, _ := strings.Cut(strings.TrimSpace(l), "; fix: ")
		if !strings.Contains(stdout, "FAIL config   "+msg+"\n") || !strings.Contains(stdout, "fix: "+fix+"\n") {
			t.Errorf("doctor output lacks problem %q / fix %q:\n%s", msg, fix, stdout)
		}
	}
}

func TestDoctorGoodConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wxbroker.yaml")
	// doctor also probes Redis and WeChat: give it both.
	rs := redistest.Start(t)
	sim := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(sim.Close)
	cfg := fmt.Sprintf(`
redis: {addrs: [%q]}
wechat: {base_url: %q, fallback_urls: []}
namespaces:
  prod:
    apps: [{appid: wx04a7af67c8f47620, secret: s3cr3t-value, kind: miniprogram}]
`, rs.Addr, sim.URL)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCmd(t, "doctor", "--config", path)
	if code != exitOK || !strings.Contains(stdout, "ok   config") {
		t.Errorf("doctor = %d, %q, %q; want exit 0 and an ok config line", code, stdout, stderr)
	}
	if strings.Contains(stdout, "s3cr3t-value") {
		t.Errorf("doctor shows the secret:\n%s", stdout)
	}
	if code, _, _ := runCmd(t, "doctor"); code != exitUsage {
		t.Errorf("doctor without --config exited %d; want %d", code, exitUsage)
	}
	if code, stdout, _ := runCmd(t, "doctor", "--config", filepath.Join(t.TempDir(), "missing.yaml")); code != exitFailure ||
		!strings.Contains(stdout, "no such file") {
		t.Errorf("doctor on a missing file = %d, %q", code, stdout)
	}
}

func getJSON(t *testing.T, u string) map[string]any {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("GET %s: decode: %v", u, err)
	}
	return m
}

func TestSim(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stdout, stderr logtest.Buffer
	done := make(chan int, 1)
	go func() {
		done <- dispatch(ctx, []string{"sim", "--listen", "127.0.0.1:0", "--overlap", "1s"}, &stdout, &stderr)
	}()

	listening := regexp.MustCompile(`listening on (http://127\.0\.0\.1:\d+)`)
	var base string
	waitFor(t, "the simulator to listen", 10*time.Second, func() bool {
		if m := listening.FindStringSubmatch(stdout.String()); m != nil {
			base = m[1]
			return true
		}
		select {
		case code := <-done:
			t.Fatalf("sim exited %d: %s", code, stderr.String())
		default:
		}
		return false
	})
	// The banner is written in several writes after the listening line:
	// wait for all of it rather than reading whatever has arrived.
	app := demoApps[0]
	wants := []string{app.AppID + ":" + app.Secret, "curl -s -X POST " + base + "/cgi-bin/stable_token",
		"curl -s '" + base + "/cgi-bin/token?grant_type=client_credential", "access_token=ACCESS_TOKEN"}
	missing := func() []string {
		var m []string
		banner := stdout.String()
		for _, want := range wants {
			if !strings.Contains(banner, want) {
				m = append(m, want)
			}
		}
		return m
	}
	waitFor(t, "the whole banner", 10*time.Second, func() bool {
		if m := missing(); len(m) > 0 {
			t.Logf("banner lacks %q so far", m)
			return false
		}
		return true
	})

	tokenURL := base + "/cgi-bin/token?grant_type=client_credential&appid=" + app.AppID + "&secret=" + url.QueryEscape(app.Secret)
	first, _ := getJSON(t, tokenURL)["access_token"].(string)
	second, _ := getJSON(t, tokenURL)["access_token"].(string)
	if first == "" || second == "" || first == second {
		t.Fatalf("classic tokens %q, %q; want two different tokens", first, second)
	}
	generic := func(tok string) float64 {
		code, _ := getJSON(t, base+"/cgi-bin/get_api_domain_ip?access_token="+url.QueryEscape(tok))["errcode"].(float64)
		return code
	}
	if got := generic(second); got != 0 {
		t.Errorf("generic API with the new token: errcode %v; want 0", got)
	}
	waitFor(t, "the superseded token to fail with 40001 after the 1s overlap", 10*time.Second, func() bool {
		return generic(first) == 40001
	})
	if got := generic(second); got != 0 {
		t.Errorf("generic API with the new token after the overlap: errcode %v; want 0", got)
	}

	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("sim exited %d after cancel: %s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("sim did not stop after cancel")
	}
	if !strings.Contains(stdout.String(), "simulator stopped") {
		t.Errorf("no shutdown message:\n%s", stdout.String())
	}
	if _, err := http.Get(base + "/sim/stats"); err == nil {
		t.Error("simulator still answers after shutdown")
	}
}

func TestSimFlags(t *testing.T) {
	tests := [][]string{
		{"sim", "--app", "no-secret"},
		{"sim", "--app", ":secret"},
		{"sim", "--token-ttl", "0s"},
		{"sim", "extra"},
	}
	for _, args := range tests {
		if code, _, _ := runCmd(t, args...); code != exitUsage {
			t.Errorf("wxbroker %v exited %d; want %d", args, code, exitUsage)
		}
	}
	if code, _, stderr := runCmd(t, "sim", "--listen", "256.0.0.1:bad"); code != exitFailure {
		t.Errorf("sim on a bad address = %d, %q; want %d", code, stderr, exitFailure)
	}
}
