package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// TestDoctorRedactsProxyPassword (finding 4): doctor never prints the
// password of a proxy URL, whether the configuration is valid (the WeChat
// probe lines) or not (the validation problems), and never echoes a raw
// client key pasted into key_sha256.
func TestDoctorRedactsProxyPassword(t *testing.T) {
	const pw = "Pr0xyPassw0rd"
	rs := redistest.Start(t)
	sim := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(sim.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a closed port: the fallback fails to connect
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	withPW := strings.Replace(sim.URL, "http://", "http://proxyuser:"+pw+"@", 1)
	tests := []struct {
		name, yaml string
	}{
		{"valid", fmt.Sprintf(`
redis: {addrs: [%q]}
wechat: {base_url: %q, fallback_urls: ["http://proxyuser:%s@%s/"], timeout: 1s}
namespaces: {prod: {apps: [{appid: wx04a7af67c8f47620, secret: "${WX_TEST_SECRET}", kind: miniprogram}]}}
`, rs.Addr, withPW, pw, dead)},
		{"invalid", fmt.Sprintf(`
redis: {addrs: [%q]}
wechat: {base_url: "ftp://proxyuser:%s@proxy.example/", fallback_urls: ["proxy.example:%s@x"]}
namespaces: {prod: {apps: [{appid: wx04a7af67c8f47620, secret: "${WX_TEST_SECRET}", kind: miniprogram}]}}
clients: [{name: svc, key_sha256: "raw-client-key-%s", allow: ["prod/*"]}]
`, rs.Addr, pw, pw, pw)},
	}
	t.Setenv("WX_TEST_SECRET", "s3cr3t-value")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "wxbroker.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, stdout, stderr := runCmd(t, "doctor", "--config", path)
			if strings.Contains(stdout+stderr, pw) {
				t.Fatalf("doctor prints the proxy password:\n%s%s", stdout, stderr)
			}
			if !strings.Contains(stdout, "proxyuser:xxxxx@") {
				t.Errorf("doctor should still show which URL (redacted):\n%s", stdout)
			}
			if tt.name == "invalid" && !strings.Contains(stdout, "looks like a raw key?") {
				t.Errorf("doctor lacks the raw-key hint:\n%s", stdout)
			}
		})
	}
}

// TestDoctorAndServeWarnOnLooseFileModes (finding 8): a world-readable
// secret file and a group-readable config holding an inline secret are
// reported by doctor (WARN) and by serve (a warn log line), without the
// secret.
func TestDoctorAndServeWarnOnLooseFileModes(t *testing.T) {
	rs := redistest.Start(t)
	sim := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(sim.Close)
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "redis.pw")
	if err := os.WriteFile(pwFile, []byte("redis-s3cr3t"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(pwFile, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "wxbroker.yaml")
	yaml := fmt.Sprintf(`
listen: "127.0.0.1:0"
redis: {addrs: [%q], password_file: redis.pw}
wechat: {base_url: %q, fallback_urls: []}
namespaces: {prod: {apps: [{appid: wx04a7af67c8f47620, secret: inline-s3cr3t, kind: miniprogram}]}}
`, rs.Addr, sim.URL)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	_, stdout, _ := runCmd(t, "doctor", "--config", path)
	for _, want := range []string{"WARN files    redis.password_file", "readable by every user", "inline secret", "chmod 600"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, stdout)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // serve loads the config, warns, starts and stops at once
	var out, errOut strings.Builder
	runServe(ctx, []string{"--config", path}, &out, &errOut)
	logs := errOut.String()
	if n := strings.Count(logs, "secret readable by other users"); n != 2 {
		t.Errorf("serve logged %d file-mode warnings; want 2:\n%s", n, logs)
	}
	for _, s := range []string{stdout, logs} {
		if strings.Contains(s, "s3cr3t") {
			t.Errorf("output shows a secret:\n%s", s)
		}
	}
}
