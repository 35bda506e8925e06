package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/config"
	"github.com/wxbroker/wxbroker/metrics"
)

// TestReloadSwapsClientsAndApps: after a committed reload the next request
// sees the new clients and apps; nothing changes before the commit.
func TestReloadSwapsClientsAndApps(t *testing.T) {
	h := newHarness(t)
	if r := h.do(t, http.MethodGet, tokenPath("prod", appA), keyOrder, nil); r.status != http.StatusOK {
		t.Fatalf("before: order key = %d; want 200", r.status)
	}
	next := testConfig()
	next.Clients = next.Clients[1:] // order-service retired
	next.Clients = append(next.Clients, config.Client{Name: "newcomer", KeySHA256: config.HashKey("newcomer-key-0123456789"), Allow: []string{"prod/*"}})
	next.Namespaces["prod"].Apps = next.Namespaces["prod"].Apps[:1] // appB removed
	next.ApplyDefaults()
	commit, err := h.api.PrepareReload(next)
	if err != nil {
		t.Fatalf("PrepareReload: %v", err)
	}
	if r := h.do(t, http.MethodGet, tokenPath("prod", appA), keyOrder, nil); r.status != http.StatusOK {
		t.Errorf("prepared, not committed: order key = %d; want 200", r.status)
	}
	commit()
	if r := h.do(t, http.MethodGet, tokenPath("prod", appA), keyOrder, nil); r.status != http.StatusUnauthorized {
		t.Errorf("retired key after the reload = %d; want 401", r.status)
	}
	if r := h.do(t, http.MethodGet, tokenPath("prod", appA), "newcomer-key-0123456789", nil); r.status != http.StatusOK {
		t.Errorf("new key after the reload = %d; want 200", r.status)
	}
	if n := testutil.CollectAndCount(h.m.TokenRequests, "wxbroker_token_requests_total"); n == 0 {
		t.Fatal("no token request series at all")
	}
	if v := testutil.ToFloat64(h.m.TokenRequests.WithLabelValues("prod", appB, metrics.RequestOK)); v != 0 {
		t.Errorf("removed app's series survived with %v", v)
	}
}

type fakeAdmin struct {
	reloadErr error
	reloads   int
	resumed   []string
}

func (f *fakeAdmin) Reload(context.Context) error { f.reloads++; return f.reloadErr }

func (f *fakeAdmin) Resume(_ context.Context, ns, appid string) error {
	f.resumed = append(f.resumed, ns+"/"+appid)
	if appid == appB {
		return broker.ErrNotStopped
	}
	return nil
}

// TestAdminRoutes: the reload and resume routes want an admin key, map a
// refused reload to 400 with its problems and a process without a file to
// 404.
func TestAdminRoutes(t *testing.T) {
	h := newHarness(t)
	adm := &fakeAdmin{}
	h.api.admin.adm = adm
	const resume = "/v1/admin/namespaces/prod/apps/" + appA + "/resume"
	for _, tc := range []struct {
		name, target, key string
		want              int
	}{
		{"reload, no key", "/v1/admin/reload", "", http.StatusUnauthorized},
		{"reload, not admin", "/v1/admin/reload", keyOrder, http.StatusForbidden},
		{"reload", "/v1/admin/reload", keySRE, http.StatusOK},
		{"resume, not admin", resume, keyOrder, http.StatusForbidden},
		{"resume", resume, keySRE, http.StatusAccepted},
		{"resume, not stopped", "/v1/admin/namespaces/prod/apps/" + appB + "/resume", keySRE, http.StatusOK},
	} {
		if r := h.do(t, http.MethodPost, tc.target, tc.key, nil); r.status != tc.want {
			t.Errorf("%s = %d %s; want %d", tc.name, r.status, r.body, tc.want)
		}
	}
	if adm.reloads != 1 || len(adm.resumed) != 2 {
		t.Errorf("reloads %d, resumed %v; want 1 and 2", adm.reloads, adm.resumed)
	}
	adm.reloadErr = fmt.Errorf("config: x.yaml: %w", &config.ValidationError{Problems: []config.Problem{{Key: "listen", Message: "changed"}}})
	if r := h.do(t, http.MethodPost, "/v1/admin/reload", keySRE, nil); r.status != http.StatusBadRequest || !strings.Contains(string(r.body), "listen") {
		t.Errorf("refused reload = %d %s; want 400 naming listen", r.status, r.body)
	}
	adm.reloadErr = fmt.Errorf("dev: %w", ErrNoConfigFile)
	if r := h.do(t, http.MethodPost, "/v1/admin/reload", keySRE, nil); r.status != http.StatusNotFound {
		t.Errorf("reload without a file = %d; want 404", r.status)
	}
	h.api.admin.adm = nil
	if r := h.do(t, http.MethodPost, "/v1/admin/reload", keySRE, nil); r.status != http.StatusNotFound {
		t.Errorf("reload without Admin = %d; want 404", r.status)
	}
}
