package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/internal/logtest"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

var (
	devRedisLine = regexp.MustCompile(`(?m)^embedded Redis\s+(\S+)$`)
	devSimLine   = regexp.MustCompile(`(?m)^WeChat simulator\s+(\S+)`)
)

// TestDevTTLsCountDown: dev mode's embedded Redis expires keys, so the
// force_min_interval marker of a report goes away after the interval and the
// next report of a token is not answered 429 (before, miniredis never
// counted TTLs down and every report after the first was refused for as long
// as the process ran).
func TestDevTTLsCountDown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var stdout logtest.Buffer
	done := make(chan error, 1)
	go func() { done <- dev(ctx, "127.0.0.1:0", "", zaptest.NewLogger(t), &stdout, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("dev did not stop within 15s")
		}
	})
	var key, tokenURL, redisAddr, simURL string
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := stdout.String()
		var m, r []string
		for _, line := range strings.Split(out, "\n") {
			if mm := curlToken.FindStringSubmatch(line); mm != nil {
				m = mm
			}
		}
		r = devRedisLine.FindStringSubmatch(out)
		sim := devSimLine.FindStringSubmatch(out)
		if m != nil && r != nil && sim != nil {
			key, tokenURL, redisAddr, simURL = m[1], m[2], r[1], sim[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev printed no banner within 30s:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The classic demo app: a report of a token WeChat refuses is a forced
	// fetch counted against force_min_interval. The broker checks a report
	// with get_api_domain_ip first; the simulator answers that check with
	// 40001 (a fault), so each report is proven and forces a fetch.
	app := devApps[1]
	base := strings.TrimSuffix(tokenURL, "/apps/"+devApps[0].appid+"/access_token")
	appURL := base + "/apps/" + app.appid + "/access_token"
	report := func() (int, string) {
		t.Helper()
		fault, err := http.Post(simURL+"/sim/faults", "application/json",
			strings.NewReader(`{"api":"get_api_domain_ip","n":1,"errcode":40001}`))
		if err != nil {
			t.Fatalf("POST /sim/faults: %v", err)
		}
		_ = fault.Body.Close()
		if fault.StatusCode != http.StatusOK {
			t.Fatalf("POST /sim/faults: %s", fault.Status)
		}
		code, body, err := httpGet(appURL, "", key)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GET token of %s: %d %s %v", app.appid, code, body, err)
		}
		var tok struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(body, &tok); err != nil {
			t.Fatal(err)
		}
		req, err := http.NewRequest(http.MethodPost, appURL+"/invalidate",
			strings.NewReader(`{"access_token":"`+tok.AccessToken+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("POST invalidate: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := report(); code != http.StatusOK {
		t.Fatalf("first report: %d %s; want 200", code, body)
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = rdb.Close() })
	marker := "{wxbroker}:ns:" + app.ns + ":forcelast:" + app.appid
	if n, err := rdb.Exists(context.Background(), marker).Result(); err != nil || n != 1 {
		t.Fatalf("EXISTS %s after a report = %d, %v; want the force_min_interval marker", marker, n, err)
	}
	// The marker lives devForceInterval: wait for it to expire (it never
	// did before), then report again.
	waitUntil := time.Now().Add(devForceInterval + 15*time.Second)
	for {
		n, err := rdb.Exists(context.Background(), marker).Result()
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(waitUntil) {
			t.Fatalf("force_min_interval marker still present %s after the report; want it gone after %s", devForceInterval+15*time.Second, devForceInterval)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := report(); code != http.StatusOK {
		t.Errorf("report after force_min_interval: %d %s; want 200", code, body)
	}
}

// TestDevUploadAboveRetryBody: in wxbroker dev, a media upload larger than
// gateway.retry_body_bytes (streamed, never re-sent) goes through the
// gateway to the simulator and back, and a file above WeChat's limit for its
// type answers WeChat's errcode. Before, the simulator cut every request
// body at 1 MiB and answered 41005 "media data missing".
func TestDevUploadAboveRetryBody(t *testing.T) {
	b, _ := runDevInProcess(t, []string{"--listen", "127.0.0.1:0", "--public-listen", "", "--log-level", "warn"}, io.Discard)
	app := "prod/" + devApps[1].appid
	size := int(config.DefaultGateway().RetryBodyBytes) + 2<<20
	if size > wechattest.MediaLimit("image") {
		t.Fatalf("test file of %d bytes is above the image limit", size)
	}
	file := bytes.Repeat([]byte("wxbroker"), size/8)

	post := func(typ string, data []byte) map[string]any {
		t.Helper()
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		fw, err := mw.CreateFormFile("media", "upload.bin")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fw.Write(data)
		_ = mw.Close()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, b.base+"/cgi-bin/media/upload?type="+typ, &body)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.Header.Set("Authorization", "Bearer "+b.key)
		req.Header.Set("X-Wxbroker-App", app)
		resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("upload %s of %d bytes: %v", typ, len(data), err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("upload %s of %d bytes: %s, %v", typ, len(data), resp.Status, err)
		}
		return out
	}

	up := post("image", file)
	id, _ := up["media_id"].(string)
	if id == "" {
		t.Fatalf("upload image of %d bytes (retry_body_bytes %d) through the gateway = %v; want a media_id",
			len(file), config.DefaultGateway().RetryBodyBytes, up)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, b.base+"/cgi-bin/media/get?media_id="+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+b.key)
	req.Header.Set("X-Wxbroker-App", app)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil || !bytes.Equal(got, file) {
		t.Errorf("media/get through the gateway = %d bytes, %v; want the %d bytes uploaded", len(got), err, len(file))
	}

	voice := file[:wechattest.MediaLimit("voice")+1]
	if r := post("voice", voice); r["errcode"] != float64(40010) {
		t.Errorf("upload voice of %d bytes = %v; want errcode 40010 (WeChat's 2 MiB limit)", len(voice), r)
	}
}

// TestDevSurvivesSIGHUP: dev has no configuration file to reload, and a
// SIGHUP (a terminal closing, or an operator trying a reload) is logged and
// ignored instead of ending the process, as it did before.
func TestDevSurvivesSIGHUP(t *testing.T) {
	var logs logtest.Buffer
	b, done := runDevInProcess(t, []string{"--listen", "127.0.0.1:0", "--public-listen", ""}, &logs)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatalf("kill -HUP: %v", err)
	}
	waitFor(t, "dev to log the ignored SIGHUP", 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "SIGHUP ignored")
	})
	select {
	case code := <-done:
		t.Fatalf("dev stopped after SIGHUP: exit %d", code)
	default:
	}
	req, _ := http.NewRequest(http.MethodGet, b.base+"/v1/namespaces/prod/apps/"+devApps[0].appid+"/access_token", nil)
	req.Header.Set("Authorization", "Bearer "+b.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("token read after SIGHUP: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token read after SIGHUP = %d; want 200", resp.StatusCode)
	}
}

// TestDevDemoPlatform: with a public listener, wxbroker dev runs a demo
// Open Platform component end to end: the simulator's encrypted ticket
// push reaches the event URL, the component token is minted with it, the
// demo authorizers' authorized pushes become active authorizers whose
// tokens the API and the gateway serve, and the banner prints their curl
// lines.
func TestDevDemoPlatform(t *testing.T) {
	var stdout, stderr *logtest.Buffer
	var b devBanner
	// dev picks free ports for its listeners before it binds them (the
	// login redirect URI names the public one); a test running beside it
	// may take one in between. Start again then, and only then.
	for attempt := 1; ; attempt++ {
		stdout, stderr = &logtest.Buffer{}, &logtest.Buffer{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int, 1)
		go func() {
			done <- runDev(ctx, []string{"--listen", "127.0.0.1:0", "--public-listen", "127.0.0.1:0"}, stdout, stderr)
		}()
		banner, exited, code := devBannerOrExit(t, stdout, done)
		if !exited {
			b = banner
			t.Cleanup(func() {
				cancel()
				select {
				case <-done:
				case <-time.After(15 * time.Second):
					t.Error("dev did not stop within 15s")
				}
			})
			break
		}
		cancel()
		if attempt == 3 || !strings.Contains(stderr.String(), "address already in use") {
			t.Fatalf("dev exited with %d before its banner (attempt %d); its log:\n%s", code, attempt, stderr.String())
		}
	}
	defer func() {
		if t.Failed() {
			t.Logf("dev's log:\n%s", stderr.String())
		}
	}()
	comp := b.base + "/v1/namespaces/" + devComponentNS + "/components/" + devComponentAppID
	for _, want := range []string{comp + "/access_token", comp + "/authorizers", "X-Wxbroker-App: prod/" + devComponentAppID + "/" + devAuthorizers[0], "/preauth_url?redirect_uri="} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, stdout.String())
		}
	}
	// The banner comes after the demo set-up: the authorizers are there.
	code, body, err := httpGet(comp, "/authorizers", b.key)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET authorizers: %d %s %v", code, body, err)
	}
	var list struct {
		Authorizers []struct {
			AppID string `json:"authorizer_appid"`
			State string `json:"state"`
		} `json:"authorizers"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	active := map[string]bool{}
	for _, a := range list.Authorizers {
		active[a.AppID] = a.State == "active"
	}
	for _, a := range devAuthorizers {
		if !active[a] {
			t.Errorf("authorizer %s: not listed active in %s", a, body)
		}
	}
	code, body, err = httpGet(comp, "/authorizers/"+devAuthorizers[0]+"/access_token", b.key)
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET authorizer token: %d %s %v", code, body, err)
	}
	var tok readAnswer
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("authorizer token answer %s: %v", body, err)
	}
	if !tokenValid(t, b.sim, devAuthorizers[0], tok.AccessToken) {
		t.Errorf("the authorizer token served is not valid at the simulator")
	}
	req, _ := http.NewRequest(http.MethodGet, b.base+"/cgi-bin/menu/get", nil)
	req.Header.Set("Authorization", "Bearer "+b.key)
	req.Header.Set("X-Wxbroker-App", devComponentNS+"/"+devComponentAppID+"/"+devAuthorizers[0])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("gateway call as the authorizer: %v", err)
	}
	gw, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(gw), `"menu"`) {
		t.Errorf("gateway call as the authorizer = %d %s; want the menu", resp.StatusCode, gw)
	}
}

// devBannerOrExit waits for dev's banner, or for its exit before it
// (exited: its code was received from done).
func devBannerOrExit(t *testing.T, stdout *logtest.Buffer, done <-chan int) (b devBanner, exited bool, code int) {
	t.Helper()
	baseLine := regexp.MustCompile(`(?m)^internal API\s+(\S+)$`)
	keyLine := regexp.MustCompile(`(?m)^demo client key\s+(\S+)`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := stdout.String()
		bl, sl, kl := baseLine.FindStringSubmatch(out), devSimLine.FindStringSubmatch(out), keyLine.FindStringSubmatch(out)
		if bl != nil && sl != nil && kl != nil {
			return devBanner{base: bl[1], sim: sl[1], key: kl[1]}, false, 0
		}
		select {
		case code := <-done:
			return devBanner{}, true, code
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dev printed no banner within 30s:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
