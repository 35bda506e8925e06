package wechattest

import (
	"encoding/json"
	"net/http"

	"github.com/wxbroker/wxbroker/wechat/msgcrypt"
)

// componentControl serves the /sim/components control endpoints listed at
// serveControl. It reports false for a route it does not know.
func (s *Sim) componentControl(w http.ResponseWriter, r *http.Request, route string, body []byte) bool {
	var in struct {
		ComponentAppID  string   `json:"component_appid"`
		ComponentSecret string   `json:"component_secret"`
		Token           string   `json:"token"`
		EncodingAESKey  string   `json:"encoding_aes_key"`
		EventURL        string   `json:"event_url"`
		AllowedIPs      []string `json:"allowed_ips"`
		Rotate          bool     `json:"rotate_refresh_tokens"`
		On              bool     `json:"on"`
		AuthorizerAppID string   `json:"authorizer_appid"`
	}
	if len(body) > 0 {
		if err := json.Unmarshal(body, &in); err != nil {
			controlError(w, http.StatusBadRequest, "invalid JSON body: "+err.Error())
			return true
		}
	}
	if r.Method == http.MethodGet {
		q := r.URL.Query()
		in.ComponentAppID, in.AuthorizerAppID = q.Get("component_appid"), q.Get("authorizer_appid")
	}
	known := func() bool {
		s.mu.Lock()
		_, ok := s.comps.byID[in.ComponentAppID]
		s.mu.Unlock()
		if !ok {
			controlError(w, http.StatusBadRequest, "unknown component_appid (POST /sim/components first)")
		}
		return ok
	}
	pushErr := func(err error) string {
		if err != nil {
			return err.Error()
		}
		return ""
	}
	switch route {
	case "POST /sim/components":
		err := s.AddComponent(Component{
			AppID: in.ComponentAppID, Secret: in.ComponentSecret, Token: in.Token,
			EncodingAESKey: in.EncodingAESKey, EventURL: in.EventURL, RotateRefreshTokens: in.Rotate,
		})
		if err != nil {
			controlError(w, http.StatusBadRequest, err.Error())
			return true
		}
		s.SetAllowedIPs(in.ComponentAppID, in.AllowedIPs...)
		controlJSON(w, map[string]bool{"ok": true})
	case "POST /sim/components/rotation":
		if known() {
			s.SetRefreshRotation(in.ComponentAppID, in.On)
			controlJSON(w, map[string]bool{"ok": true})
		}
	case "POST /sim/components/push_ticket":
		if known() {
			t, err := s.PushTicket(r.Context(), in.ComponentAppID)
			controlJSON(w, map[string]string{"ticket": t, "push_error": pushErr(err)})
		}
	case "POST /sim/components/authorize":
		if in.AuthorizerAppID == "" {
			controlError(w, http.StatusBadRequest, "authorizer_appid is required")
			return true
		}
		if known() {
			code, err := s.Authorize(r.Context(), in.ComponentAppID, in.AuthorizerAppID)
			controlJSON(w, map[string]string{"auth_code": code, "push_error": pushErr(err)})
		}
	case "POST /sim/components/revoke":
		if known() {
			s.mu.Lock()
			a, ok := s.comps.byID[in.ComponentAppID].authorizers[in.AuthorizerAppID]
			active := ok && !a.revoked
			s.mu.Unlock()
			if !active {
				controlError(w, http.StatusBadRequest, "authorizer_appid has no active authorization")
				return true
			}
			err := s.Revoke(r.Context(), in.ComponentAppID, in.AuthorizerAppID)
			controlJSON(w, map[string]any{"ok": true, "push_error": pushErr(err)})
		}
	case "POST /sim/components/repush":
		if known() {
			err := s.RepushLast(r.Context(), in.ComponentAppID)
			controlJSON(w, map[string]any{"ok": err == nil, "push_error": pushErr(err)})
		}
	case "GET /sim/components/state":
		if known() {
			rt, active := s.RefreshToken(in.ComponentAppID, in.AuthorizerAppID)
			failed, dropped := s.PushFailures(in.ComponentAppID)
			pushes := map[string]int{}
			for _, info := range []msgcrypt.InfoType{msgcrypt.InfoVerifyTicket, msgcrypt.InfoAuthorized, msgcrypt.InfoUpdateAuthorized, msgcrypt.InfoUnauthorized} {
				pushes[string(info)] = s.Pushes(in.ComponentAppID, info)
			}
			controlJSON(w, map[string]any{
				"verify_ticket": s.VerifyTicket(in.ComponentAppID), "refresh_token": rt, "authorized": active,
				"pushes": pushes, "push_failures": failed, "pushes_dropped": dropped,
			})
		}
	default:
		return false
	}
	return true
}
