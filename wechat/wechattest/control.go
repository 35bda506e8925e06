package wechattest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"
)

// knownAPI reports whether api is one of the simulator's API names.
func knownAPI(api string) bool {
	switch api {
	case apiToken, apiStableToken, apiGetTicket, apiJSCode2Session, apiCheckSession, apiPhoneNumber,
		apiOAuthAccessToken, apiOAuthRefreshToken, apiUserInfo, apiOAuthCheck, apiComponentToken,
		apiAuthorizerToken, apiClearQuota, apiQuotaGet, apiRidGet, apiGeneric:
		return true
	}
	return extraAPI(api)
}

// serveControl serves the JSON control endpoints under /sim/ for
// out-of-process users (`wxbroker sim`, node tests):
//
//	POST   /sim/apps          {"appid","secret","allowed_ips":[…]}  → {"ok":true}
//	POST   /sim/codes/login   {"appid","person","risky":bool}       → {"code"}
//	POST   /sim/codes/phone   {"appid","phone"}                     → {"code"}
//	POST   /sim/codes/oauth   {"appid","person"}                    → {"code"}
//	POST   /sim/faults        {"api","n","latency_ms","status","invalid_json","errcode","drop","drop_response"} → {"ok":true}
//	DELETE /sim/faults                                              → {"ok":true}
//	GET    /sim/stats                                               → {"calls":{api:{appid:n}},"tokens":{appid:n},"answered":{"errcode":n}}
//	GET    /sim/token_valid?appid=&token=                           → {"valid":bool,"dead_at":RFC 3339} (dead_at: when it stops or stopped being accepted; absent for unknown tokens)
//	GET    /sim/ids?appid=&person=                                  → {"openid","unionid"}
//	POST   /sim/reset                                               → {"ok":true}
//
// and those of an Open Platform component (componentControl):
//
//	POST   /sim/components            {"component_appid","component_secret","token","encoding_aes_key","event_url","allowed_ips":[…],"rotate_refresh_tokens":bool} → {"ok":true}
//	POST   /sim/components/rotation   {"component_appid","on":bool}            → {"ok":true}
//	POST   /sim/components/push_ticket {"component_appid"}                     → {"ticket","push_error"}
//	POST   /sim/components/authorize  {"component_appid","authorizer_appid"}   → {"auth_code","push_error"}
//	POST   /sim/components/revoke     {"component_appid","authorizer_appid"}   → {"ok":true,"push_error"}
//	POST   /sim/components/repush     {"component_appid"}                      → {"ok":true,"push_error"}
//	GET    /sim/components/state?component_appid=&authorizer_appid=        → {"verify_ticket","refresh_token","authorized","pushes":{info:n},"push_failures","pushes_dropped"}
//
// Errors answer 4xx with {"error":"…"}.
func (s *Sim) serveControl(w http.ResponseWriter, r *http.Request) {
	var in struct {
		AppID        string   `json:"appid"`
		Secret       string   `json:"secret"`
		AllowedIPs   []string `json:"allowed_ips"`
		Person       string   `json:"person"`
		Risky        bool     `json:"risky"`
		Phone        string   `json:"phone"`
		API          string   `json:"api"`
		N            int      `json:"n"`
		LatencyMs    int64    `json:"latency_ms"`
		Status       int      `json:"status"`
		InvalidJSON  bool     `json:"invalid_json"`
		Errcode      int      `json:"errcode"`
		Drop         bool     `json:"drop"`
		DropResponse bool     `json:"drop_response"`
	}
	var raw []byte
	if r.Method == http.MethodPost {
		var err error
		if raw, err = io.ReadAll(io.LimitReader(r.Body, maxBody)); err != nil {
			controlError(w, http.StatusBadRequest, "read body: "+err.Error())
			return
		}
		if err := json.NewDecoder(bytes.NewReader(raw)).Decode(&in); err != nil && !errors.Is(err, io.EOF) {
			controlError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
			return
		}
	}
	route := r.Method + " " + r.URL.Path
	switch route {
	case "POST /sim/apps":
		if in.AppID == "" || in.Secret == "" {
			controlError(w, http.StatusBadRequest, "appid and secret are required")
			return
		}
		s.AddApp(in.AppID, in.Secret)
		s.SetAllowedIPs(in.AppID, in.AllowedIPs...)
		controlJSON(w, map[string]bool{"ok": true})
	case "POST /sim/codes/login", "POST /sim/codes/phone", "POST /sim/codes/oauth":
		if in.AppID == "" {
			controlError(w, http.StatusBadRequest, "appid is required")
			return
		}
		var v string
		switch {
		case route == "POST /sim/codes/phone" && in.Phone == "":
			controlError(w, http.StatusBadRequest, "phone is required")
			return
		case route == "POST /sim/codes/phone":
			v = s.MintPhoneCode(in.AppID, in.Phone)
		case in.Person == "":
			controlError(w, http.StatusBadRequest, "person is required")
			return
		case route == "POST /sim/codes/oauth":
			v = s.MintOAuthCode(in.AppID, in.Person)
		case in.Risky:
			v = s.MintRiskyLoginCode(in.AppID, in.Person)
		default:
			v = s.MintLoginCode(in.AppID, in.Person)
		}
		controlJSON(w, map[string]string{"code": v})
	case "POST /sim/faults":
		if !knownAPI(in.API) {
			controlError(w, http.StatusBadRequest, "unknown api "+strconv.Quote(in.API))
			return
		}
		if in.N == 0 {
			in.N = 1
		}
		if in.N < 0 || in.LatencyMs < 0 {
			controlError(w, http.StatusBadRequest, "n and latency_ms must not be negative")
			return
		}
		if in.Status != 0 && (in.Status < 100 || in.Status > 999) {
			controlError(w, http.StatusBadRequest, "status must be an HTTP status code")
			return
		}
		s.Fail(in.API, in.N, Fault{
			Latency:      time.Duration(in.LatencyMs) * time.Millisecond,
			Status:       in.Status,
			InvalidJSON:  in.InvalidJSON,
			Errcode:      in.Errcode,
			Drop:         in.Drop,
			DropResponse: in.DropResponse,
		})
		controlJSON(w, map[string]bool{"ok": true})
	case "DELETE /sim/faults":
		s.ClearFaults()
		controlJSON(w, map[string]bool{"ok": true})
	case "GET /sim/stats":
		controlJSON(w, s.statsSnapshot())
	case "GET /sim/token_valid":
		q := r.URL.Query()
		out := struct {
			Valid  bool      `json:"valid"`
			DeadAt time.Time `json:"dead_at,omitzero"`
		}{Valid: s.TokenValid(q.Get("appid"), q.Get("token"))}
		out.DeadAt, _ = s.TokenDeath(q.Get("appid"), q.Get("token"))
		controlJSON(w, out)
	case "GET /sim/ids":
		q := r.URL.Query()
		controlJSON(w, map[string]string{
			"openid":  s.OpenID(q.Get("appid"), q.Get("person")),
			"unionid": s.UnionID(q.Get("person")),
		})
	case "POST /sim/reset":
		s.Reset()
		controlJSON(w, map[string]bool{"ok": true})
	default:
		if !s.componentControl(w, r, route, raw) {
			controlError(w, http.StatusNotFound, "no such control endpoint: "+route)
		}
	}
}

// statsSnapshot copies the stats for GET /sim/stats.
func (s *Sim) statsSnapshot() any {
	s.mu.Lock()
	defer s.mu.Unlock()
	calls := make(map[string]map[string]int, len(s.st.calls))
	for api, m := range s.st.calls {
		c := make(map[string]int, len(m))
		for id, n := range m {
			c[id] = n
		}
		calls[api] = c
	}
	tokens := make(map[string]int, len(s.st.issued))
	for id, n := range s.st.issued {
		tokens[id] = n
	}
	answered := make(map[string]int, len(s.st.answered))
	for code, n := range s.st.answered {
		answered[strconv.Itoa(code)] = n
	}
	return struct {
		Calls    map[string]map[string]int `json:"calls"`
		Tokens   map[string]int            `json:"tokens"`
		Answered map[string]int            `json:"answered"`
	}{calls, tokens, answered}
}

func controlJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func controlError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
