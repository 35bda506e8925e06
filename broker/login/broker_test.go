package login

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/wxbroker/wxbroker/broker"
	"github.com/wxbroker/wxbroker/internal/brokertest"
	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// startBroker runs a real broker on the env's Redis, config and simulator,
// stopped when the test ends; it returns the broker and its registry.
func startBroker(e *env) (*broker.Broker, *prometheus.Registry) {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	b := brokertest.Run(e.t, broker.Options{
		Config: e.cfg, Redis: e.rdb, WeChat: e.wx, Logger: zap.NewNop(), Metrics: metrics.New(reg),
		InstanceID: "login-test",
	})
	brokertest.WaitToken(e.t, b, testNS, mpAppID, 15*time.Second)
	return b, reg
}

func TestPhoneNumberWithRealBroker(t *testing.T) {
	var reg *prometheus.Registry
	e := newEnv(t, withTokens(func(e *env) Tokens {
		b, r := startBroker(e)
		reg = r
		return b
	}))
	d := e.miniLogin("uma", "Uma", "")
	code := e.sim.MintPhoneCode(mpAppID, "13600136000")
	e.sim.Fail("getuserphonenumber", 1, wechattest.Fault{Errcode: 40001})
	p := decodeData[phoneView](t, e.post(routeWxPhone, d.AccessToken, map[string]string{"code": code}))
	if p.PurePhoneNumber != "13600136000" {
		t.Fatalf("phone = %+v", p)
	}
	if n := e.sim.Calls("getuserphonenumber", mpAppID); n != 2 {
		t.Fatalf("getuserphonenumber calls = %d; want 2 (one retry)", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var reports float64
	for _, mf := range mfs {
		if mf.GetName() != "wxbroker_invalid_credential_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == metrics.SourceLogin {
					reports += m.GetCounter().GetValue()
				}
			}
		}
	}
	if reports != 1 {
		t.Fatalf("wxbroker_invalid_credential_total{source=login} = %v; want exactly 1 Invalidate", reports)
	}
}
