package api

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wxbroker/wxbroker/internal/logtest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// deadlineGateway serves an API over the fake TokenSource, whose gateway
// sends to base with gateway.timeout set to timeout, on a loopback server
// built by (*API).Server as serve builds it. limit, when set, replaces the
// server's ReadTimeout and WriteTimeout: equal to gateway.timeout it is the
// default relation (30 s and 30 s) without waiting 30 s.
func deadlineGateway(t *testing.T, timeout, limit time.Duration, base string) (string, *metrics.Metrics, *logtest.Buffer) {
	t.Helper()
	cfg := testConfig()
	cfg.WeChat.BaseURL = base
	cfg.WeChat.FallbackURLs = nil
	cfg.Gateway.Timeout = timeout
	logs := &logtest.Buffer{}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), logs, zapcore.DebugLevel))
	m := metrics.New(prometheus.NewRegistry())
	a, err := New(Options{Tokens: newFake(), Config: cfg, Logger: log, Metrics: m, AuditWriter: io.Discard, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	srv := a.Server("127.0.0.1:0")
	if limit > 0 {
		srv.ReadTimeout, srv.WriteTimeout = limit, limit
	}
	ln, err := net.Listen("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String(), m, logs
}

// gwRequests is the gateway's request count for appA's custom/send with
// result and errcode -1.
func gwRequests(m *metrics.Metrics, result string) float64 {
	return testutil.ToFloat64(m.Gateway.Requests.WithLabelValues("prod", appA, "/cgi-bin/message/custom/send", result, metrics.ErrcodeLabel(-1)))
}

// TestGatewayAnswersSlowWeChatBeforeTheServerDeadline (issue 14, item 4):
// when WeChat does not answer within gateway.timeout, the caller gets
// WeChat's -1 — also when the listener's WriteTimeout equals
// gateway.timeout (the defaults: 30 s and 30 s), where the answer used to
// be written after the connection's deadline: an empty reply.
func TestGatewayAnswersSlowWeChatBeforeTheServerDeadline(t *testing.T) {
	sim := wechattest.NewServer(wechattest.Options{})
	t.Cleanup(sim.Close)
	sim.Fail(wechat.APIGeneric, 1, wechattest.Fault{Latency: time.Minute})
	const timeout = 500 * time.Millisecond
	gw, m, logs := deadlineGateway(t, timeout, timeout, sim.URL)

	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Post(gw+"/cgi-bin/message/custom/send?access_token="+tokenA, "application/json", strings.NewReader(`{"touser":"o"}`))
	if err != nil {
		t.Fatalf("gateway call with WeChat slower than gateway.timeout: %v; want WeChat's -1 answer, not an empty reply", err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	v := wxAnswer(t, "slow WeChat", resp.StatusCode, b)
	if msg, _ := v["errmsg"].(string); errcode(v) != -1 || !strings.Contains(msg, "gateway.timeout") {
		t.Errorf("answer with WeChat slower than gateway.timeout = %s; want errcode -1 naming gateway.timeout", b)
	}
	if got := gwRequests(m, metrics.GatewayUnreachable); got != 1 {
		t.Errorf(`requests{result="unreachable",errcode="-1"} = %v; want 1`, got)
	}
	if !strings.Contains(logs.String(), "wechat did not answer") {
		t.Errorf("no warn line about WeChat not answering in:\n%s", logs)
	}
}

// TestGatewayUploadMayTakeGatewayTimeout: an upload slower than the
// listener's fixed ReadTimeout but within gateway.timeout is forwarded:
// the read deadline of a gateway call follows gateway.timeout.
func TestGatewayUploadMayTakeGatewayTimeout(t *testing.T) {
	var got []byte
	up := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, body []byte) {
		got = body
		answerJSON(w, `{"errcode":0,"errmsg":"ok"}`)
	})
	gw, m, _ := deadlineGateway(t, 20*time.Second, 300*time.Millisecond, up.URL)
	pr, pw := io.Pipe()
	go func() {
		for i := range 5 {
			time.Sleep(200 * time.Millisecond) // the pace of a slow uplink, not a wait for a condition
			_, _ = fmt.Fprintf(pw, "chunk%d;", i)
		}
		_ = pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, gw+"/cgi-bin/message/custom/send?access_token="+tokenA, pr)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("slow upload within gateway.timeout: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if v := wxAnswer(t, "slow upload", resp.StatusCode, b); errcode(v) != 0 {
		t.Errorf("slow upload within gateway.timeout = %s; want WeChat's answer", b)
	}
	if string(got) != "chunk0;chunk1;chunk2;chunk3;chunk4;" {
		t.Errorf("WeChat received %q; want the whole body", got)
	}
	if n := gwRequests(m, metrics.GatewayUnreachable); n != 0 {
		t.Errorf(`requests{result="unreachable"} = %v; want 0`, n)
	}
}

// TestGatewaySlowCallerIsTheCallersFault (issue 14, item 5): a caller that
// sends its body slower than gateway.timeout allows is answered -1 saying
// so, logged and counted as the caller's fault (result client_error), not as
// WeChat unreachable.
func TestGatewaySlowCallerIsTheCallersFault(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) { answerJSON(w, `{"errcode":0}`) })
	// 2 s: the call reaches the body read long before, even on a loaded machine.
	gw, m, logs := deadlineGateway(t, 2*time.Second, 0, up.URL)
	conn, err := net.Dial("tcp", strings.TrimPrefix(gw, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// 10 of the 100 bytes announced, then nothing.
	_, err = fmt.Fprintf(conn, "POST /cgi-bin/message/custom/send?access_token=%s HTTP/1.1\r\nHost: wxbroker\r\n"+
		"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"touser\":", tokenA)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("answer to a caller that stopped sending its body: %v; want WeChat's shape\n%s", err, logs)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("answer %q is not JSON", b)
	}
	if msg, _ := v["errmsg"].(string); resp.StatusCode != http.StatusOK || errcode(v) != -1 || !strings.Contains(msg, "request body") {
		t.Errorf("answer to a slow caller = %d %s; want 200 and errcode -1 saying the request body did not arrive", resp.StatusCode, b)
	}
	if got := gwRequests(m, "client_error"); got != 1 {
		t.Errorf(`requests{result="client_error",errcode="-1"} = %v; want 1`, got)
	}
	if got := gwRequests(m, metrics.GatewayUnreachable); got != 0 {
		t.Errorf(`requests{result="unreachable"} = %v; want 0: WeChat was never at fault`, got)
	}
	if l := logs.String(); strings.Contains(l, "wechat did not answer") || !strings.Contains(l, "did not send its request body") {
		t.Errorf("log lines blame WeChat or do not name the caller:\n%s", l)
	}
}
