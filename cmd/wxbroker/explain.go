package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/wxbroker/wxbroker/wechat"
)

const (
	explainSynopsis = "ERRCODE | --list"
	explainSummary  = "explain a WeChat errcode and what to do about it (中文 and English)"
)

func explainCommand() command {
	return command{synopsis: explainSynopsis, summary: explainSummary, run: runExplain}
}

func runExplain(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("explain", explainSynopsis, explainSummary, stderr)
	list := fs.Bool("list", false, "list every errcode wxbroker knows")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *list {
		if fs.NArg() != 0 {
			fmt.Fprintln(stderr, "wxbroker explain: --list takes no errcode")
			return exitUsage
		}
		for _, c := range wechat.KnownCodes() {
			h, _ := wechat.Explain(c)
			fmt.Fprintf(stdout, "%6d  %s\n", c, h.Title)
		}
		return exitOK
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	code, err := strconv.Atoi(strings.TrimSpace(fs.Arg(0)))
	if err != nil {
		fmt.Fprintf(stderr, "wxbroker explain: %q is not an errcode: give the number from the errcode field, e.g. wxbroker explain 40001\n", fs.Arg(0))
		return exitUsage
	}
	h, known := wechat.Explain(code)
	if !known {
		fmt.Fprintf(stderr, `wxbroker explain: errcode %d is not in wxbroker's table (wxbroker explain --list shows the known codes).
To find out what happened:
  1. Take the rid from the errmsg WeChat answered: it ends with "rid: 6004f3da-1529ba72-5c345f67".
     wxbroker logs WeChat errors with their rid.
  2. Look the request up within 7 days with getRidInfo: POST /cgi-bin/openapi/rid/get?access_token=TOKEN
     with body {"rid": "..."} (the same account's token). It shows the request URL and body, the answer and
     the client_ip WeChat saw.
  3. Search the global return codes: https://developers.weixin.qq.com/doc/oplatform/Return_codes/Return_code_descriptions_new.html
要查明原因：从 errmsg 末尾取 rid，7 天内用 getRidInfo（/cgi-bin/openapi/rid/get）查询该请求；再查微信全局返回码说明。
`, code)
		return exitFailure
	}
	printHint(stdout, h)
	return exitOK
}

func printHint(w io.Writer, h wechat.Hint) {
	fmt.Fprintf(w, "errcode %d: %s\n\n", h.Code, h.Title)
	fmt.Fprintf(w, "中文\n  含义：%s\n  可能原因：%s\n  解决办法：%s\n\n", h.ZH, h.CauseZH, h.FixZH)
	fmt.Fprintf(w, "English\n  Meaning: %s\n  Likely cause: %s\n  Fix: %s\n", h.EN, h.CauseEN, h.FixEN)
}
