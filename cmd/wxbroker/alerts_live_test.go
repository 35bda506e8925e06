package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/wxbroker/wxbroker/internal/logtest"
)

// TestAlertsLive runs the shipped alert rules in a real Prometheus (the
// Debian package, as make deps installs it) against `wxbroker dev`, with a
// 2-second scrape and rule evaluation:
//
//   - another environment fetches the classic demo app's token twice (the
//     post-mortem's pattern, compressed): each time a service's next gateway
//     call meets 40001. WxbrokerInvalidCredentialFastBurn must fire for the
//     app within 3 minutes of the first of those 40001s;
//   - the stable apps' refreshes answer 40125 (a wrong AppSecret), so
//     WxbrokerConfigError fires; then the broker is killed, and no alert
//     that was firing may resolve while nothing was fixed.
func TestAlertsLive(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not found: run make deps (it installs the Debian package prometheus)")
	}
	d := startLiveDev(t)
	prom := startPrometheus(t, promBin, d.internal)
	prom.waitFor(t, "the broker's scrape target up", time.Minute, func() bool {
		return prom.query(t, `up{job="wxbroker"} == 1`) > 0
	})

	// A wrong AppSecret for the stable apps: the next stable_token call of
	// each answers 40125. A report on the mini program (proven by the
	// get_api_domain_ip check failing with 40001) makes the leader refresh
	// it at once and stop.
	d.sim(t, `{"api":"stable_token","n":1000,"errcode":40125}`)
	d.sim(t, `{"api":"get_api_domain_ip","n":1,"errcode":40001}`)
	mp := devApps[0]
	tok := d.token(t, mp.ns, mp.appid)
	d.post(t, "/v1/namespaces/"+mp.ns+"/apps/"+mp.appid+"/access_token/invalidate", `{"access_token":"`+tok+`"}`)

	// The post-mortem: the other environment fetches the classic app's
	// token (twice: the first fetch leaves the broker's token valid for the
	// simulator's overlap, the second kills it), then a service's gateway
	// call meets 40001 and the broker's retry saves it. Two rounds, more
	// than refresh.force_min_interval apart.
	oa := devApps[1]
	var first time.Time
	for round := range 2 {
		if round > 0 {
			time.Sleep(devForceInterval + time.Second)
		}
		for range 2 {
			d.outsideFetch(t, oa.appid, oa.secret)
		}
		if round == 0 {
			first = time.Now()
		}
		if body := d.gateway(t, oa.ns, oa.appid, "/cgi-bin/menu/get"); strings.Contains(body, `"errcode":40001`) {
			t.Fatalf("round %d: the gateway passed 40001 on although its retry should have saved the call: %s", round, body)
		}
	}
	fastBurn := fmt.Sprintf(`ALERTS{alertname="WxbrokerInvalidCredentialFastBurn",alertstate="firing",wx_namespace=%q,appid=%q}`, oa.ns, oa.appid)
	prom.waitFor(t, "WxbrokerInvalidCredentialFastBurn firing for "+oa.appid, 3*time.Minute-time.Since(first), func() bool {
		return prom.query(t, fastBurn) > 0
	})
	t.Logf("WxbrokerInvalidCredentialFastBurn fired %s after the first gateway 40001", time.Since(first).Round(time.Second))

	configError := fmt.Sprintf(`ALERTS{alertname="WxbrokerConfigError",alertstate="firing",appid=%q,errcode="40125"}`, mp.appid)
	prom.waitFor(t, "WxbrokerConfigError firing for "+mp.appid, time.Minute, func() bool {
		return prom.query(t, configError) > 0
	})

	// Kill the broker with the ConfigError unfixed. Its series go stale at
	// the next failed scrape; for 10 rule evaluations after that, every
	// alert that fired before must still fire.
	before := prom.firing(t)
	d.stop(t)
	prom.waitFor(t, "the scrape target down", 30*time.Second, func() bool {
		return prom.query(t, `up{job="wxbroker"} == 0`) > 0
	})
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(time.Second) {
		now := prom.firing(t)
		for a := range before {
			if !now[a] {
				t.Fatalf("alert %s resolved after the broker was killed, although nothing was fixed", a)
			}
		}
	}
	if !before[fmt.Sprintf("WxbrokerConfigError{appid=%q}", mp.appid)] {
		t.Fatalf("WxbrokerConfigError for %s was not among the firing alerts before the kill: %v", mp.appid, before)
	}
	t.Logf("still firing 20s after the broker was killed: %v", slices.Sorted(maps.Keys(before)))
}

// liveDev is a running `wxbroker dev` of TestAlertsLive.
type liveDev struct {
	internal, key, simURL string
	cancel                context.CancelFunc
	done                  chan error
}

func startLiveDev(t *testing.T) *liveDev {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout logtest.Buffer
	d := &liveDev{cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- dev(ctx, "127.0.0.1:0", "", zaptest.NewLogger(t), &stdout, io.Discard) }()
	t.Cleanup(func() { d.stop(t) })
	internal := regexp.MustCompile(`(?m)^internal API\s+(\S+)$`)
	key := regexp.MustCompile(`(?m)^demo client key\s+(\S+)`)
	deadline := time.Now().Add(time.Minute)
	for {
		out := stdout.String()
		i, k, s := internal.FindStringSubmatch(out), key.FindStringSubmatch(out), devSimLine.FindStringSubmatch(out)
		if i != nil && k != nil && s != nil {
			d.internal, d.key, d.simURL = strings.TrimPrefix(i[1], "http://"), k[1], s[1]
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev printed no banner within a minute:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop cancels dev and waits for it to return (idempotent).
func (d *liveDev) stop(t *testing.T) {
	t.Helper()
	d.cancel()
	select {
	case err, ok := <-d.done:
		if ok {
			close(d.done)
			if err != nil {
				t.Errorf("dev: %v", err)
			}
		}
	case <-time.After(30 * time.Second):
		t.Error("dev did not stop within 30s")
	}
}

func (d *liveDev) do(t *testing.T, method, url, body string, header map[string]string) []byte {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

// sim queues a fault in the simulator.
func (d *liveDev) sim(t *testing.T, fault string) {
	t.Helper()
	if b := d.do(t, http.MethodPost, d.simURL+"/sim/faults", fault, nil); !bytes.Contains(b, []byte(`"ok":true`)) {
		t.Fatalf("POST /sim/faults %s: %s", fault, b)
	}
}

func (d *liveDev) auth() map[string]string {
	return map[string]string{"Authorization": "Bearer " + d.key, "Content-Type": "application/json"}
}

func (d *liveDev) token(t *testing.T, ns, appid string) string {
	t.Helper()
	b := d.do(t, http.MethodGet, "http://"+d.internal+"/v1/namespaces/"+ns+"/apps/"+appid+"/access_token", "", d.auth())
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token of %s/%s: %s", ns, appid, b)
	}
	return tok.AccessToken
}

func (d *liveDev) post(t *testing.T, path, body string) {
	t.Helper()
	d.do(t, http.MethodPost, "http://"+d.internal+path, body, d.auth())
}

// outsideFetch is another environment fetching the app's token with its
// AppSecret straight from (simulated) WeChat.
func (d *liveDev) outsideFetch(t *testing.T, appid, secret string) {
	t.Helper()
	q := url.Values{"grant_type": {"client_credential"}, "appid": {appid}, "secret": {secret}}
	if b := d.do(t, http.MethodGet, d.simURL+"/cgi-bin/token?"+q.Encode(), "", nil); !bytes.Contains(b, []byte("access_token")) {
		t.Fatalf("outside fetch of %s: %s", appid, b)
	}
}

// gateway is a service's WeChat API call through the broker's gateway.
func (d *liveDev) gateway(t *testing.T, ns, appid, path string) string {
	t.Helper()
	h := d.auth()
	h["X-Wxbroker-App"] = ns + "/" + appid
	return string(d.do(t, http.MethodGet, "http://"+d.internal+path, "", h))
}

// livePrometheus is a Prometheus server of TestAlertsLive.
type livePrometheus struct{ base string }

// startPrometheus runs Prometheus on a free loopback port with the shipped
// rules (every group evaluated every 2 s) scraping target every 2 s; the
// test's cleanup stops it.
func startPrometheus(t *testing.T, bin, target string) *livePrometheus {
	t.Helper()
	dir := t.TempDir()
	rules, err := os.ReadFile(filepath.FromSlash("../../deploy/prometheus/rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rules = regexp.MustCompile(`(?m)^    interval: \S+$`).ReplaceAll(rules, []byte("    interval: 2s"))
	writeTestFile(t, filepath.Join(dir, "rules.yaml"), rules)
	writeTestFile(t, filepath.Join(dir, "prometheus.yml"), []byte(fmt.Sprintf(`global:
  scrape_interval: 2s
  scrape_timeout: 2s
  evaluation_interval: 2s
rule_files: [rules.yaml]
scrape_configs:
  - job_name: wxbroker
    static_configs: [{targets: [%q]}]
`, target)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus output:\n%s", logs.String())
		}
	})
	p := &livePrometheus{base: "http://" + addr}
	p.waitFor(t, "prometheus ready", time.Minute, func() bool {
		resp, err := http.Get(p.base + "/-/ready")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// waitFor polls cond every 500 ms until it holds, failing the test after
// timeout.
func (p *livePrometheus) waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; firing: %v", timeout.Round(time.Second), what, p.firing(t))
		}
	}
}

// query returns the number of series expr yields now.
func (p *livePrometheus) query(t *testing.T, expr string) int {
	t.Helper()
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	p.get(t, "/api/v1/query?query="+url.QueryEscape(expr), &r)
	return len(r.Data.Result)
}

// firing returns the firing alerts as "name{appid=...}" (appid only when
// the alert has one).
func (p *livePrometheus) firing(t *testing.T) map[string]bool {
	t.Helper()
	var r struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	p.get(t, "/api/v1/alerts", &r)
	out := map[string]bool{}
	for _, a := range r.Data.Alerts {
		if a.State != "firing" {
			continue
		}
		k := a.Labels["alertname"]
		if id := a.Labels["appid"]; id != "" {
			k += fmt.Sprintf("{appid=%q}", id)
		}
		out[k] = true
	}
	return out
}

func (p *livePrometheus) get(t *testing.T, path string, v any) {
	t.Helper()
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(p.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

func writeTestFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
