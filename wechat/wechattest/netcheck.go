package wechattest

import "encoding/json"

// apiDomainIP names GET /cgi-bin/get_api_domain_ip (getApiDomainIp) in the
// stats and fault queues, like wechat.APIDomainIP.
const apiDomainIP = "get_api_domain_ip"

// domainIPs is the list the simulator answers; loopback and documentation
// addresses only, so nothing copied from a test reaches a real host.
var domainIPs = []string{"127.0.0.1", "192.0.2.10", "192.0.2.11"}

// netcheckRoute answers the network-check APIs (part of extraRoute).
func netcheckRoute(path string) (route, bool) {
	switch path {
	case "/cgi-bin/get_api_domain_ip":
		return route{apiDomainIP, "", (*Sim).apiDomainIP}, true
	}
	return route{}, false
}

// apiDomainIP serves GET /cgi-bin/get_api_domain_ip?access_token=: the IPs
// behind api.weixin.qq.com. It only checks the token (41001, 40001, 40014,
// 42001 like any token-checked API), changes nothing and has no daily
// quota, which is why a broker can use it to ask whether WeChat still
// accepts a token.
func (s *Sim) apiDomainIP(c *call) []byte {
	if _, fail := s.checkToken(c, c.q("access_token"), appKinds()...); fail != nil {
		return fail
	}
	b, _ := json.Marshal(struct {
		IPList []string `json:"ip_list"`
	}{domainIPs}) // a []string always marshals
	return b
}

// netcheckAPI reports whether api names one of the routes of netcheckRoute.
func netcheckAPI(api string) bool {
	return api == apiDomainIP
}
