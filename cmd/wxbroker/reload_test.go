package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/redistest"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

const (
	tAppNew  = "wx1000000000000003"
	tOldKey  = "process-test-retired-key"
	tNewKey  = "process-test-new-key"
	tickSpan = time.Second // the scheduler's longest sleep (Broker.tick)
)

// reloadConfig is one replica's file: the stable app always, the new app
// and the retired client as asked.
func reloadConfig(name string, port int, redisAddr, prefix, baseURL string, withNew, withOldKey bool) string {
	apps := fmt.Sprintf("      - {appid: %s, secret: secret-stable, kind: miniprogram, token_mode: stable}\n", tAppStable)
	if withNew {
		apps += fmt.Sprintf("      - {appid: %s, secret: secret-new, kind: official_account, token_mode: classic}\n", tAppNew)
	}
	clients := fmt.Sprintf("  - {name: tester, key_sha256: %s, allow: [\"*/*\"], admin: true}\n", config.HashKey(tKey))
	if withOldKey {
		clients += fmt.Sprintf("  - {name: retired, key_sha256: %s, allow: [\"prod/*\"]}\n", config.HashKey(tOldKey))
	} else {
		clients += fmt.Sprintf("  - {name: newcomer, key_sha256: %s, allow: [\"prod/*\"]}\n", config.HashKey(tNewKey))
	}
	return fmt.Sprintf(`instance_id: %s
listen: 127.0.0.1:%d
log: {level: info, format: json}
redis: {addrs: [%q], key_prefix: %s}
leader: {lock_ttl: %s, renew_interval: 1s}
wechat: {base_url: %q, fallback_urls: [], timeout: 1s}
refresh: {before_expiry: 8s, jitter: 5%%, stable_rotation_window: 8s, force_min_interval: 1s}
namespaces:
  prod:
    apps:
%sclients:
%s`, name, port, redisAddr, prefix, tLockTTL, baseURL, apps, clients)
}

var reloadTotal = regexp.MustCompile(`(?m)^wxbroker_config_reload_total\{result="(success|failure)"\} (\S+)$`)

// reloads reads wxbroker_config_reload_total from p's /metrics.
func reloads(t *testing.T, p *proc) (success, failure int) {
	t.Helper()
	code, body, err := httpGet(p.base, "/metrics", "")
	if err != nil || code != http.StatusOK {
		t.Fatalf("%s /metrics = %d, %v", p.name, code, err)
	}
	for _, m := range reloadTotal.FindAllSubmatch(body, -1) {
		n, _ := strconv.ParseFloat(string(m[2]), 64)
		if string(m[1]) == "success" {
			success = int(n)
		} else {
			failure = int(n)
		}
	}
	return success, failure
}

func credentialCalls(sim *wechattest.Server, appid string) int {
	return sim.Calls(wechat.APIToken, appid) + sim.Calls(wechat.APIStableToken, appid) + sim.Calls(wechat.APIGetTicket, appid)
}

// TestServeReload is the credential engine's done-when test: three `wxbroker
// serve` processes (one redis-server, one simulator) get a new app and lose
// a client key by an edit of their files and a SIGHUP each. The new app's
// token is served by every replica within one schedule tick of the last
// reload (plus the one WeChat call), no other app sees an extra WeChat
// call, the retired key is refused on the next request, and a broken file
// on reload changes nothing and counts as a failure.
func TestServeReload(t *testing.T) {
	if testing.Short() {
		t.Skip("process test: starts wxbroker serve processes; run without -short")
	}
	wxbrokerBinary(t)
	rs := redistest.Start(t)
	sim := wechattest.NewServer(wechattest.Options{TokenTTL: time.Hour, RotationWindow: 8 * time.Second})
	t.Cleanup(sim.Close)
	sim.AddApp(tAppStable, "secret-stable")
	sim.AddApp(tAppNew, "secret-new")

	prefix := fmt.Sprintf("wxbr%d", time.Now().UnixNano()%1e6)
	type replica struct {
		*proc
		path   string
		port   int
		config func(withNew, withOldKey bool) string
	}
	reps := make([]*replica, 3)
	for i := range reps {
		name := fmt.Sprintf("r%d", i)
		port := redistest.FreePort(t)
		r := &replica{port: port, path: filepath.Join(t.TempDir(), name+".yaml")}
		r.config = func(withNew, withOldKey bool) string {
			return reloadConfig(name, port, rs.Addr, prefix, sim.URL, withNew, withOldKey)
		}
		if err := os.WriteFile(r.path, []byte(r.config(false, true)), 0o600); err != nil {
			t.Fatal(err)
		}
		r.proc = startProc(t, name, "serve", "--config", r.path)
		r.base = "http://127.0.0.1:" + strconv.Itoa(port)
		reps[i] = r
	}
	tokenPath := func(app string) string { return "/v1/namespaces/prod/apps/" + app + "/access_token" }
	for _, r := range reps {
		waitFor(t, r.name+" serves the stable app", 20*time.Second, func() bool {
			code, _, err := httpGet(r.base, tokenPath(tAppStable), tKey)
			return err == nil && code == http.StatusOK
		})
		if code, _, _ := httpGet(r.base, tokenPath(tAppStable), tOldKey); code != http.StatusOK {
			t.Fatalf("%s: retired key before the reload = %d; want 200", r.name, code)
		}
		if code, _, _ := httpGet(r.base, tokenPath(tAppNew), tKey); code != http.StatusNotFound {
			t.Fatalf("%s: new app before the reload = %d; want 404", r.name, code)
		}
	}
	stableCalls := credentialCalls(sim, tAppStable)

	// 1. Add the app and retire a client key: edit each file, SIGHUP each.
	for _, r := range reps {
		if err := os.WriteFile(r.path, []byte(r.config(true, false)), 0o600); err != nil {
			t.Fatal(err)
		}
		r.signal(t, syscall.SIGHUP)
	}
	signalled := time.Now()
	for _, r := range reps {
		waitFor(t, r.name+" reloaded", 10*time.Second, func() bool {
			ok, _ := reloads(t, r.proc)
			return ok == 1
		})
		// The retired key is refused on the very next request, the new one
		// accepted.
		if code, _, _ := httpGet(r.base, tokenPath(tAppStable), tOldKey); code != http.StatusUnauthorized {
			t.Errorf("%s: retired key after the reload = %d; want 401", r.name, code)
		}
		if code, _, _ := httpGet(r.base, tokenPath(tAppStable), tNewKey); code != http.StatusOK {
			t.Errorf("%s: new key after the reload = %d; want 200", r.name, code)
		}
	}
	limit := tickSpan + time.Second + 2*time.Second // one tick, one WeChat call (timeout 1s), slack for a loaded host
	for _, r := range reps {
		took := waitFor(t, r.name+" serves the new app", 20*time.Second, func() bool {
			code, _, err := httpGet(r.base, tokenPath(tAppNew), tKey)
			return err == nil && code == http.StatusOK
		})
		since := time.Since(signalled)
		t.Logf("%s serves the new app %s after the last SIGHUP (waited %s here)", r.name, since.Round(time.Millisecond), took.Round(time.Millisecond))
		if since > limit {
			t.Errorf("%s served the new app %s after the last SIGHUP; want within one schedule tick plus one call (%s)", r.name, since, limit)
		}
	}
	if n := sim.Calls(wechat.APIToken, tAppNew); n != 1 {
		t.Errorf("new app: %d token calls; want exactly 1 (one leader, one fetch)", n)
	}
	if n := credentialCalls(sim, tAppStable); n != stableCalls {
		t.Errorf("stable app: %d credential calls after the reload, %d before; a reload must not refresh other apps", n, stableCalls)
	}

	// 2. A broken file changes nothing and counts as a failure.
	broken := []byte("namespaces:\n  prod:\n    apps:\n      - {appid: not-an-appid, secret: x}\n")
	for _, r := range reps {
		if err := os.WriteFile(r.path, broken, 0o600); err != nil {
			t.Fatal(err)
		}
		r.signal(t, syscall.SIGHUP)
	}
	for _, r := range reps {
		waitFor(t, r.name+" counts the failed reload", 10*time.Second, func() bool {
			_, failed := reloads(t, r.proc)
			return failed == 1
		})
		if ok, _ := reloads(t, r.proc); ok != 1 {
			t.Errorf("%s: %d successful reloads after the broken file; want still 1", r.name, ok)
		}
		for _, app := range []string{tAppStable, tAppNew} {
			if code, body, _ := httpGet(r.base, tokenPath(app), tNewKey); code != http.StatusOK {
				t.Errorf("%s: %s after a broken reload = %d %s; want 200 (nothing changed)", r.name, app, code, body)
			}
		}
		if code, _, _ := httpGet(r.base, tokenPath(tAppStable), tOldKey); code != http.StatusUnauthorized {
			t.Errorf("%s: retired key after a broken reload = %d; want 401", r.name, code)
		}
	}

	// 3. The admin route reloads like SIGHUP; a change to a key that needs a
	// restart is refused with its name.
	r0 := reps[0]
	restart := []byte(r0.config(true, false) + "gateway: {max_concurrent: 7}\n")
	if err := os.WriteFile(r0.path, restart, 0o600); err != nil {
		t.Fatal(err)
	}
	code, body := httpPost(t, r0.base+"/v1/admin/reload", tKey)
	if code != http.StatusBadRequest || !regexp.MustCompile(`gateway`).Match(body) {
		t.Errorf("admin reload of a restart-only change = %d %s; want 400 naming gateway", code, body)
	}
	if err := os.WriteFile(r0.path, []byte(r0.config(false, false)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, body := httpPost(t, r0.base+"/v1/admin/reload", tKey); code != http.StatusOK {
		t.Fatalf("admin reload = %d %s; want 200", code, body)
	}
	if code, _, _ := httpGet(r0.base, tokenPath(tAppNew), tKey); code != http.StatusNotFound {
		t.Errorf("%s: removed app = %d; want 404", r0.name, code)
	}
	if code, _, _ := httpGet(reps[1].base, tokenPath(tAppNew), tKey); code != http.StatusOK {
		t.Errorf("%s: the app removed on %s only = %d; want 200 (each replica reloads on its own)", reps[1].name, r0.name, code)
	}
}

func httpPost(t *testing.T, u, key string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s: read body: %v", u, err)
	}
	return resp.StatusCode, b
}
