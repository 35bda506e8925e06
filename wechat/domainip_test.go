package wechat_test

import (
	"testing"
	"time"

	"github.com/wxbroker/wxbroker/wechat"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// APIDomainIP tells whether WeChat still accepts a token, and changes
// nothing: the token it checked stays valid and nothing is minted.
func TestAPIDomainIPChecksAToken(t *testing.T) {
	e := newSimEnv(t, wechattest.Options{Overlap: time.Second})
	old := mustToken(t, e, simApp, simSecret)

	ips, err := e.c.APIDomainIP(t.Context(), old)
	if err != nil || len(ips) == 0 {
		t.Fatalf("APIDomainIP(valid) = %v, %v; want the IP list", ips, err)
	}
	if e.sim.TokensIssued(simApp) != 1 || !e.sim.TokenValid(simApp, old) {
		t.Error("the check minted a token or killed the one it checked")
	}

	cur := mustToken(t, e, simApp, simSecret) // supersedes old after the overlap
	e.clock.Advance(2 * time.Second)
	ae := wantCode(t, func() error { _, err := e.c.APIDomainIP(t.Context(), old); return err }(), 40001)
	if !ae.InvalidCredential() || ae.API != wechat.APIDomainIP {
		t.Errorf("APIError %+v: want an invalid credential of api %s", ae, wechat.APIDomainIP)
	}
	wantCode(t, func() error { _, err := e.c.APIDomainIP(t.Context(), "garbage"); return err }(), 40014)
	if _, err := e.c.APIDomainIP(t.Context(), cur); err != nil {
		t.Errorf("APIDomainIP(current) = %v", err)
	}
	if n := e.sim.Calls(wechat.APIDomainIP, simApp); n != 3 {
		t.Errorf("simulator counted %d get_api_domain_ip calls for the app; want 3 (the malformed token names none)", n)
	}
}
