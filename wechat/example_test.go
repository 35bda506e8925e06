package wechat_test

import (
	"errors"
	"fmt"

	"github.com/wxbroker/wxbroker/wechat"
)

// The official JS-SDK signature sample: the fragment of the page URL is not signed.
func ExampleJSAPISignature() {
	sig := wechat.JSAPISignature(
		"sM4AOVdWfPE4DxkXGEs8VMCPGGVi4C3VM0P37wVUCFvkVAy_90u5h9nbSlYy3-Sl-HhTdfl2fzFy1AOcHKP7qg",
		"Wm3WZYTPz0wzccnW", 1414587457, "http://mp.weixin.qq.com?params=value#top")
	fmt.Println(sig)
	// Output: 0f9de62fce790f9a083d5c99e95740ceb90c27ed
}

func ExampleExplain() {
	h, ok := wechat.Explain(40125)
	fmt.Println(ok, h.Title)
	fmt.Println(h.ZH)
	fmt.Println(h.FixEN)
	// Output:
	// true invalid appsecret
	// AppSecret 无效（官方中文表误写为 AppID）。
	// Reset the AppSecret under Development → Development settings (it is shown once), update the config or secret file and reload; retrying does not help.
}

func ExampleAPIError() {
	err := error(&wechat.APIError{API: wechat.APIStableToken, Code: 45011, Msg: "api minute-quota reach limit", RID: "6004f3da-1529ba72-5c345f67"})
	fmt.Println(err)
	var ae *wechat.APIError
	if errors.As(err, &ae) {
		fmt.Println(ae.Retryable(), ae.MinBackoff())
	}
	// Output:
	// wechat: stable_token: errcode 45011: api minute-quota reach limit (rid: 6004f3da-1529ba72-5c345f67)
	// true 1m0s
}
