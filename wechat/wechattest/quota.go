package wechattest

import (
	"encoding/json"
	"strings"
	"time"
)

// cgiAPI maps a cgi_path of quota/get to the API name whose counter it reads.
func cgiAPI(path string) string {
	switch path {
	case "/cgi-bin/token":
		return apiToken
	case "/cgi-bin/stable_token":
		return apiStableToken
	case "/cgi-bin/ticket/getticket":
		return apiGetTicket
	case "/cgi-bin/component/api_component_token":
		return apiComponentToken
	case "/cgi-bin/component/api_authorizer_token":
		return apiAuthorizerToken
	case "/cgi-bin/clear_quota/v2":
		return apiClearQuota
	case "/cgi-bin/openapi/quota/get":
		return apiQuotaGet
	case "/cgi-bin/openapi/rid/get":
		return apiRidGet
	case "/wxa/checksession":
		return apiCheckSession
	case "/wxa/business/getuserphonenumber":
		return apiPhoneNumber
	}
	return apiGeneric
}

// quotaGet serves POST /cgi-bin/openapi/quota/get: the daily limit and use
// of one API for the token's app. APIs without a quota report a limit of
// 100,000,000.
func (s *Sim) quotaGet(c *call) []byte {
	t, fail := s.checkToken(c, c.q("access_token"), appKinds()...)
	if fail != nil {
		return fail
	}
	if !c.jsonOK {
		return s.errBody(c, 47001, "")
	}
	path := c.field("cgi_path")
	switch {
	case !strings.HasPrefix(path, "/"):
		return s.errBody(c, 76021, "")
	case strings.HasPrefix(path, "/sns/"):
		return s.errBody(c, 76022, "")
	}
	type quota struct {
		DailyLimit int `json:"daily_limit"`
		Used       int `json:"used"`
		Remain     int `json:"remain"`
	}
	type rate struct {
		CallCount     int `json:"call_count"`
		RefreshSecond int `json:"refresh_second"`
	}
	var q quota
	if a, ok := s.apps[t.appID]; ok {
		s.roll(a)
		api := cgiAPI(path)
		q.DailyLimit, _ = s.limit(a, api)
		q.Used = a.used[api]
		q.Remain = max(0, q.DailyLimit-q.Used)
	}
	b, _ := json.Marshal(struct {
		Errcode            int    `json:"errcode"`
		Errmsg             string `json:"errmsg"`
		Quota              quota  `json:"quota"`
		RateLimit          rate   `json:"rate_limit"`
		ComponentRateLimit rate   `json:"component_rate_limit"`
	}{0, "ok", q, rate{10000, 60}, rate{10000, 60}})
	return b
}

// ridGet serves POST /cgi-bin/openapi/rid/get for the rids of the token's
// app (76001 unknown, 76002 malformed, 76003 another app's, 76004 older than
// 7 days). Only failed calls have rids; credentials in the recorded request
// are masked.
func (s *Sim) ridGet(c *call) []byte {
	t, fail := s.checkToken(c, c.q("access_token"), appKinds()...)
	if fail != nil {
		return fail
	}
	if !c.jsonOK {
		return s.errBody(c, 47001, "")
	}
	rid := c.field("rid")
	if !validRID(rid) {
		return s.errBody(c, 76002, "")
	}
	rec, ok := s.rids[rid]
	switch {
	case !ok:
		return s.errBody(c, 76001, "")
	case rec.appID != t.appID:
		return s.errBody(c, 76003, "")
	case s.now().Sub(rec.invokeTime) > 7*24*time.Hour:
		return s.errBody(c, 76004, "")
	}
	type request struct {
		InvokeTime   int64  `json:"invoke_time"`
		CostInMs     int64  `json:"cost_in_ms"`
		RequestURL   string `json:"request_url"`
		RequestBody  string `json:"request_body"`
		ResponseBody string `json:"response_body"`
		ClientIP     string `json:"client_ip"`
	}
	b, _ := json.Marshal(struct {
		Errcode int     `json:"errcode"`
		Errmsg  string  `json:"errmsg"`
		Request request `json:"request"`
	}{0, "ok", request{rec.invokeTime.Unix(), rec.costMs, rec.requestURL, rec.reqBody, rec.respBody, rec.clientIP}})
	return b
}
