package api

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/config"
)

// TestConcurrentReportsOneKey (issue 14, item 8): 200 concurrent reports of
// one failed token over three replicas, all with one client key at the
// default clients[].invalidate_per_minute, all get the new token: only a
// report that costs WeChat a call counts against the limit, and a burst of
// one token costs at most one per replica.
func TestConcurrentReportsOneKey(t *testing.T) {
	// The subject is the report limit, not a timeout: give the one token
	// fetch room on a loaded host.
	e := newGatewayEnvWith(t, 3, nil, func(cfg *config.Config) {
		cfg.WeChat.Timeout = 5 * time.Second
		cfg.Leader.LockTTL = 15 * time.Second
		cfg.Leader.RenewInterval = 2 * time.Second
	})
	dead, err := e.replicas[0].b.AccessToken("prod", appA)
	if err != nil {
		t.Fatal(err)
	}
	// Another process fetches a token with the same AppID.
	resp, err := http.Get(e.sim.URL + "/cgi-bin/token?grant_type=client_credential&appid=" + appA + "&secret=" + gwSecrets[appA])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for e.sim.TokenValid(appA, dead.AccessToken) {
		if time.Now().After(deadline) {
			t.Fatal("the outside fetch did not kill the broker's token")
		}
		time.Sleep(5 * time.Millisecond)
	}
	calls := e.tokenCalls(appA)

	const n = 200
	answers := make([]string, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest(http.MethodPost, e.replicas[i%3].url+tokenPath("prod", appA)+"/invalidate",
				strings.NewReader(`{"access_token":"`+dead.AccessToken+`"}`))
			req.Header.Set("Authorization", "Bearer "+keyOrder)
			resp, err := e.client.Do(req)
			if err != nil {
				answers[i] = err.Error()
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var a tokenAnswer
			if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &a) != nil || a.AccessToken == "" || a.AccessToken == dead.AccessToken {
				answers[i] = resp.Status + " " + string(b)
			}
		})
	}
	close(start)
	wg.Wait()
	failed := 0
	for i, a := range answers {
		if a != "" {
			if failed++; failed <= 3 {
				t.Errorf("report #%d (replica %d): %s; want the new token", i, i%3, a)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d concurrent reports of one token with one client key did not get the new token", failed, n)
	}
	if got := e.tokenCalls(appA) - calls; got != 1 {
		t.Errorf("token calls = %d; want 1", got)
	}
	if t.Failed() {
		for _, l := range strings.Split(e.logs.String(), "\n") {
			if strings.Contains(l, `"level":"warn"`) || strings.Contains(l, `"level":"error"`) {
				t.Log(l)
			}
		}
	}
}
