package wechattest

// stats are the counters tests assert on.
type stats struct {
	calls    map[string]map[string]int // api → appid → calls
	issued   map[string]int            // appid → tokens minted
	answered map[int]int               // errcode → answers
}

func (st *stats) reset() {
	st.calls = make(map[string]map[string]int)
	st.issued = make(map[string]int)
	st.answered = make(map[int]int)
}

func (st *stats) call(api, appID string) {
	m, ok := st.calls[api]
	if !ok {
		m = make(map[string]int)
		st.calls[api] = m
	}
	m[appID]++
}

// Calls returns how many calls of api (an API name such as "token") for
// appID the simulator received, faulted calls included. A call is counted
// for the appid it names or, failing that, for the owner of the token it
// carries; calls that name no known token count for appID "".
func (s *Sim) Calls(api, appID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.calls[api][appID]
}

// TokensIssued returns how many access tokens the simulator minted for
// appID: classic, stable (a normal-mode call that returns the current token
// mints nothing), forced, component and authorizer tokens.
func (s *Sim) TokensIssued(appID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.issued[appID]
}

// Answered returns how many times the simulator answered a non-zero errcode
// (e.g. 40001, 42001), injected Errcode faults included.
func (s *Sim) Answered(errcode int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.answered[errcode]
}

// Reset clears the stats, the components' push counts included. Apps,
// components, tokens, codes, quotas and faults stay.
func (s *Sim) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.reset()
	for _, comp := range s.comps.byID {
		clear(comp.delivered)
		comp.failed, comp.dropped = 0, 0
	}
}
