package wechattest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/wxbroker/wxbroker/wechat/wechattest"
)

// Example fetches a classic access token from the simulator, lets a second
// fetch supersede it, and moves the injected clock past the overlap.
func Example() {
	now := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	srv := wechattest.NewServer(wechattest.Options{Now: func() time.Time { return now }})
	defer srv.Close()
	srv.AddApp("wx1234567890abcdef", "the-secret")

	fetch := func() (token string, expiresIn int) {
		resp, err := http.Get(srv.URL + "/cgi-bin/token?" + url.Values{
			"grant_type": {"client_credential"}, "appid": {"wx1234567890abcdef"}, "secret": {"the-secret"},
		}.Encode())
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		var body struct {
			AccessToken string `json:"access_token"`
			ExpiresIn   int    `json:"expires_in"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			panic(err)
		}
		return body.AccessToken, body.ExpiresIn
	}

	first, expiresIn := fetch()
	fmt.Println("expires_in:", expiresIn)
	second, _ := fetch()
	fmt.Println("first valid during the overlap:", srv.TokenValid("wx1234567890abcdef", first))
	now = now.Add(5 * time.Minute)
	fmt.Println("first valid after the overlap:", srv.TokenValid("wx1234567890abcdef", first))
	fmt.Println("second valid:", srv.TokenValid("wx1234567890abcdef", second))
	fmt.Println("tokens issued:", srv.TokensIssued("wx1234567890abcdef"))
	// Output:
	// expires_in: 7200
	// first valid during the overlap: true
	// first valid after the overlap: false
	// second valid: true
	// tokens issued: 2
}
