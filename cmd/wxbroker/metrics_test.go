package main

import (
	"bufio"
	"bytes"
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// TestDevMetricsPassPromtool scrapes /metrics of a running `wxbroker dev`
// and pipes it into `promtool check metrics` (the Prometheus linter), then
// checks the series the alerts rely on: the build, the wx_namespace label
// (no wxbroker series carries a label named namespace), a refresh deadline
// for every credential, and the per-app read counters. promtool comes with
// make deps; without it the test fails and says so.
func TestDevMetricsPassPromtool(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: starts wxbroker dev; run without -short")
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run make deps (it installs the Debian package prometheus, which ships promtool)")
	}
	base := startDev(t)
	var body []byte
	waitFor(t, "a leader's refresh metrics on /metrics", 30*time.Second, func() bool {
		code, b, err := httpGet(base, "/metrics", "")
		body = b
		return err == nil && code == 200 && bytes.Contains(b, []byte("wxbroker_leader 1")) &&
			bytes.Contains(b, []byte("wxbroker_wechat_quota_used{"))
	})

	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	text := string(body)
	for _, tc := range []struct {
		name string
		re   string
	}{
		{"build info", `(?m)^wxbroker_build_info\{goversion="go[^"]+",revision="[^"]+",version="[^"]+"\} 1$`},
		{"refresh deadline of a stable token", `(?m)^wxbroker_token_refresh_due_timestamp_seconds\{appid="wxd0000000000000a1",kind="access_token",wx_namespace="prod"\} \S+$`},
		{"refresh deadline of a ticket", `(?m)^wxbroker_token_refresh_due_timestamp_seconds\{appid="wxd0000000000000a2",kind="jsapi_ticket",wx_namespace="prod"\} \S+$`},
		{"seeded 503 counter per app", `(?m)^wxbroker_token_requests_total\{appid="wxd0000000000000b1",result="unavailable",wx_namespace="staging"\} 0$`},
		{"seeded external invalidations", `(?m)^wxbroker_external_invalidation_total\{appid="wxd0000000000000a3",wx_namespace="prod"\} 0$`},
		{"quota limit", `(?m)^wxbroker_wechat_quota_limit\{api="stable_token"\} 500000$`},
		{"forced-refresh budget", `(?m)^wxbroker_forced_refresh_limit \d+$`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !regexp.MustCompile(tc.re).MatchString(text) {
				t.Errorf("/metrics has no line matching %s", tc.re)
			}
		})
	}
	if m := regexp.MustCompile(`(?m)^wxbroker_\w+\{(?:[^}]*,)?namespace=.*$`).FindString(text); m != "" {
		t.Errorf("a wxbroker series carries the label namespace (it is wx_namespace): %s", m)
	}
}

// startDev runs `wxbroker dev` on loopback ports it picks and returns the
// internal API's base URL, read from the curl lines it prints.
func startDev(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cmd := exec.CommandContext(ctx, wxbrokerBinary(t), "dev", "--listen", "127.0.0.1:0", "--public-listen", "127.0.0.1:0")
	logPath := filepath.Join(t.TempDir(), "dev.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan string, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := curlToken.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[2]:
				default:
				}
			}
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cancel()
			<-exited
		}
		cancel()
		_ = logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("dev log:\n%s", b)
		}
	})
	select {
	case u := <-found:
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		return p.Scheme + "://" + p.Host
	case <-exited:
		t.Fatal("dev exited before printing its curl lines")
	case <-time.After(60 * time.Second):
		t.Fatal("dev printed no curl line within 60s")
	}
	return ""
}
