package wechat

import (
	"slices"
	"strconv"
)

// Hint explains an errcode in Chinese and English: what it means, the likely
// cause and the fix. Title is WeChat's (English) errmsg for the code.
type Hint struct {
	Code             int
	Title            string
	ZH, EN           string // meaning
	CauseZH, CauseEN string
	FixZH, FixEN     string
}

// hints covers every code of WeChat's global return-code list that the
// client's APIs answer, the troubleshooting table of
// the login guide (40013, 40125, 40029, 40163, 45011) and a few neighbours
// the same APIs answer. Keep it sorted by code.
var hints = []Hint{
	{
		Code: -1, Title: "system error",
		ZH: "微信系统繁忙。", EN: "WeChat's system is busy.",
		CauseZH: "微信服务端临时故障或过载，与请求内容无关。", CauseEN: "A transient failure or overload at WeChat, unrelated to the request.",
		FixZH: "稍后重试，使用指数退避（例如 1 秒起，每次翻倍，最多 5 次）。", FixEN: "Retry later with exponential backoff (e.g. from 1 s, doubling, at most 5 times).",
	},
	{
		Code: 0, Title: "ok",
		ZH: "请求成功。", EN: "The request succeeded.",
		CauseZH: "无。", CauseEN: "None.",
		FixZH: "无需处理。", FixEN: "Nothing to do.",
	},
	{
		Code: 40001, Title: "invalid credential, access_token is invalid or not latest",
		ZH:      "获取 access_token 时 AppSecret 错误，或调用接口时 access_token 无效、已被新 token 取代。",
		EN:      "The AppSecret is wrong when fetching a token, or the access_token is invalid or superseded when calling an API.",
		CauseZH: "取 token 时：AppSecret 填错、已重置或不属于该 AppID。调用接口时：其他进程、环境或开发者用同一 AppID 重新获取了 token（普通 token 后取者胜，旧 token 5 分钟后失效），或混用了稳定版与普通版 token。",
		CauseEN: "When fetching: the AppSecret is wrong, was reset, or belongs to another AppID. When calling: another process, environment or developer fetched a token for the same AppID (classic tokens: last fetch wins, the old one dies after 5 minutes), or stable and classic tokens were mixed.",
		FixZH:   "取 token 时：在公众平台“开发管理 → 开发设置”核对或重置 AppSecret 并更新配置。调用接口时：按失败的 token 做一次条件刷新后重试一次；确保全公司只有 wxbroker 获取该 AppID 的 token。",
		FixEN:   "When fetching: check or reset the AppSecret under Development → Development settings and update the config. When calling: refresh conditionally (naming the failed token) and retry once; make wxbroker the only fetcher of this AppID's token.",
	},
	{
		Code: 40002, Title: "invalid grant_type",
		ZH: "grant_type 参数不合法。", EN: "The grant_type parameter is invalid.",
		CauseZH: "取 token 应为 client_credential，换 code 应为 authorization_code，刷新 OAuth 应为 refresh_token。",
		CauseEN: "It must be client_credential for tokens, authorization_code for code exchanges and refresh_token for OAuth refreshes.",
		FixZH:   "程序缺陷：修正请求参数，重试无用。", FixEN: "A bug: fix the request; retrying does not help.",
	},
	{
		Code: 40003, Title: "invalid openid",
		ZH: "openid 不合法，或不属于该 access_token 对应的应用或用户。", EN: "The openid is invalid or does not belong to the access token's app or user.",
		CauseZH: "openid 来自另一个 AppID，或与用户授权 token 不匹配。", CauseEN: "The openid comes from another AppID or does not match the user's OAuth token.",
		FixZH: "使用与 token 同一应用、同一用户的 openid；必要时让用户重新授权。", FixEN: "Use the openid of the same app and user as the token; have the user authorize again if needed.",
	},
	{
		Code: 40013, Title: "invalid appid",
		ZH: "AppID 无效。", EN: "The AppID is invalid.",
		CauseZH: "AppID 填错（多了空格、复制不全），或不是该接口所需类型的应用（如把公众号 AppID 用于小程序），或 access_token 不属于该 AppID。",
		CauseEN: "The AppID is mistyped (extra spaces, truncated), belongs to the wrong app type (e.g. an Official Account AppID for a mini program), or the access token belongs to another AppID.",
		FixZH:   "在公众平台核对 AppID（wx 加 16 位十六进制），确认应用类型并更新配置；重试无用。",
		FixEN:   "Check the AppID (wx plus 16 hex digits) and app type in the WeChat console and fix the config; retrying does not help.",
	},
	{
		Code: 40014, Title: "invalid access_token",
		ZH: "access_token 不合法（格式错误、属于其他账号或已过期）。", EN: "The access token is invalid (malformed, another account's, or expired).",
		CauseZH: "token 被截断或拼接错误，用了其他 AppID 的 token，或 token 已失效。", CauseEN: "The token was truncated or mangled, belongs to another AppID, or is no longer valid.",
		FixZH: "按失败的 token 做一次条件刷新后重试一次；检查存储字段长度（至少 512 字符）。", FixEN: "Refresh conditionally (naming the failed token) and retry once; make sure storage keeps at least 512 characters.",
	},
	{
		Code: 40029, Title: "invalid code",
		ZH: "code 无效：已过期、不属于该 AppID 或格式错误。", EN: "The code is invalid: expired, issued for another AppID, or malformed.",
		CauseZH: "wx.login 的 code 有效期约 5 分钟（网站扫码登录 10 分钟）；前端与后端 AppID 不一致；code 被改动。",
		CauseEN: "wx.login codes live about 5 minutes (website login codes 10); the front end and the back end use different AppIDs; the code was altered.",
		FixZH:   "让用户重新登录：前端重新调用 wx.login 并立即把 code 发给后端；核对前后端 AppID 一致。",
		FixEN:   "Have the user log in again: call wx.login again and send the code to the server at once; check both ends use the same AppID.",
	},
	{
		Code: 40030, Title: "invalid refresh_token",
		ZH: "refresh_token 无效。", EN: "The refresh token is invalid.",
		CauseZH: "refresh_token 错误、属于其他应用，或用户已重新授权使其作废。", CauseEN: "The refresh token is wrong, another app's, or replaced by a newer authorization.",
		FixZH: "让用户重新授权登录。", FixEN: "Have the user authorize again.",
	},
	{
		Code: 40125, Title: "invalid appsecret",
		ZH: "AppSecret 无效（官方中文表误写为 AppID）。", EN: "The AppSecret is invalid (the official Chinese table mislabels it as AppID).",
		CauseZH: "AppSecret 填错、已被重置，或与 AppID 不匹配；环境变量未配置或带了多余空白。",
		CauseEN: "The AppSecret is mistyped, was reset, or does not match the AppID; the environment variable is unset or has stray whitespace.",
		FixZH:   "在公众平台“开发管理 → 开发设置”重置 AppSecret（只显示一次），更新配置或 secret 文件后重载；重试无用。",
		FixEN:   "Reset the AppSecret under Development → Development settings (it is shown once), update the config or secret file and reload; retrying does not help.",
	},
	{
		Code: 40163, Title: "code been used",
		ZH: "code 已被使用过。", EN: "The code has already been used.",
		CauseZH: "code 只能使用一次：前端重复提交、后端重试了换取请求，或多个服务用同一 code 换取。",
		CauseEN: "Codes are single use: the front end submitted twice, the server retried the exchange, or two services exchanged the same code.",
		FixZH:   "不要重试同一 code；让前端重新调用 wx.login 获取新 code。", FixEN: "Never retry the same code; have the front end call wx.login again for a new one.",
	},
	{
		Code: 40164, Title: "invalid ip, not in whitelist",
		ZH: "调用方 IP 不在接口 IP 白名单中。", EN: "The caller's IP is not in the API IP whitelist.",
		CauseZH: "出口 IP 变化（NAT、云主机迁移、新节点），或开启白名单后未添加本机 IP。errmsg 中给出了微信看到的 IP。",
		CauseEN: "The egress IP changed (NAT, cloud migration, a new node), or the whitelist was enabled without this host's IP. errmsg shows the IP WeChat saw.",
		FixZH:   "把 errmsg 中的 IP 加入公众平台“开发管理 → 开发设置 → IP 白名单”；不要循环重试。",
		FixEN:   "Add the IP from errmsg under Development → Development settings → IP whitelist; do not retry in a loop.",
	},
	{
		Code: 40226, Title: "code blocked",
		ZH: "高风险用户，登录被拦截。", EN: "High-risk user: the login was blocked.",
		CauseZH: "微信风控判定该用户或设备存在风险。", CauseEN: "WeChat's risk control flagged the user or device.",
		FixZH: "拒绝本次登录并提示用户；重试无用。", FixEN: "Reject this login and tell the user; retrying does not help.",
	},
	{
		Code: 40243, Title: "AppSecret is frozen",
		ZH: "AppSecret 已被冻结。", EN: "The AppSecret is frozen.",
		CauseZH: "管理员在公众平台冻结了 AppSecret（冻结或解冻约 10 分钟生效）。", CauseEN: "An administrator froze the AppSecret in the console (freezing or unfreezing takes about 10 minutes).",
		FixZH: "联系管理员解冻 AppSecret，或重置后更新配置。", FixEN: "Ask the administrator to unfreeze it, or reset it and update the config.",
	},
	{
		Code: 41001, Title: "access_token missing",
		ZH: "缺少 access_token 参数。", EN: "The access_token parameter is missing.",
		CauseZH: "请求未带 access_token，或取到的 token 为空。", CauseEN: "The request carries no access_token, or the token obtained was empty.",
		FixZH: "程序缺陷：确认先取到 token 再调用接口。", FixEN: "A bug: make sure a token is obtained before calling.",
	},
	{
		Code: 41002, Title: "appid missing",
		ZH: "缺少 appid 参数。", EN: "The appid parameter is missing.",
		CauseZH: "配置中 AppID 为空或请求参数名写错。", CauseEN: "The AppID in the config is empty or the parameter name is wrong.",
		FixZH: "补全配置或修正请求；重试无用。", FixEN: "Fill in the config or fix the request; retrying does not help.",
	},
	{
		Code: 41004, Title: "appsecret missing",
		ZH: "缺少 secret 参数。", EN: "The secret parameter is missing.",
		CauseZH: "AppSecret 未配置（环境变量或 secret 文件为空）。", CauseEN: "The AppSecret is not configured (empty environment variable or secret file).",
		FixZH: "配置 AppSecret 后重载；重试无用。", FixEN: "Configure the AppSecret and reload; retrying does not help.",
	},
	{
		Code: 42001, Title: "access_token expired",
		ZH: "access_token 已过期。", EN: "The access token has expired.",
		CauseZH: "缓存的 token 超过有效期（通常 7200 秒）仍在使用，或本地时钟偏差。", CauseEN: "A cached token was used past its lifetime (usually 7200 s), or the local clock is off.",
		FixZH: "按失败的 token 做一次条件刷新后重试一次；提前刷新而不是等到过期。", FixEN: "Refresh conditionally (naming the failed token) and retry once; refresh before expiry, not after.",
	},
	{
		Code: 42002, Title: "refresh_token expired",
		ZH: "refresh_token 已过期。", EN: "The refresh token has expired.",
		CauseZH: "网页授权 refresh_token 有效期 30 天且不可续期。", CauseEN: "Web OAuth refresh tokens live 30 days and cannot be renewed.",
		FixZH: "让用户重新授权。", FixEN: "Have the user authorize again.",
	},
	{
		Code: 42003, Title: "oauth_code expired",
		ZH: "OAuth code 已过期。", EN: "The OAuth code has expired.",
		CauseZH: "code 未在有效期内换取（公众号网页授权 5 分钟，网站扫码登录 10 分钟）。", CauseEN: "The code was not exchanged in time (5 minutes for Official Account web OAuth, 10 for website login).",
		FixZH: "让用户重新扫码或授权，回调中立即换取 code。", FixEN: "Have the user scan or authorize again and exchange the code in the callback at once.",
	},
	{
		Code: 42007, Title: "access_token and refresh_token exception",
		ZH: "用户修改了微信密码，用户的 access_token 和 refresh_token 已失效。", EN: "The user changed their WeChat password: the user's access and refresh tokens are void.",
		CauseZH: "用户改密或账号安全事件使授权失效。", CauseEN: "A password change or security event revoked the grant.",
		FixZH: "让用户重新授权。", FixEN: "Have the user authorize again.",
	},
	{
		Code: 45009, Title: "reach max api daily quota limit",
		ZH: "接口调用已达每日上限。", EN: "The API's daily quota is used up.",
		CauseZH: "获取 token 过于频繁（多个进程或环境各自获取、没有缓存），或稳定版 token 强制刷新超过每天 20 次。配额在北京时间零点重置。",
		CauseEN: "Tokens were fetched too often (several processes or environments fetching on their own, no caching), or stable tokens were force-refreshed more than 20 times a day. Quotas reset at midnight UTC+8.",
		FixZH:   "停止调用并告警；找出额外的获取方；必要时用 clear_quota/v2 清零（每月 10 次）。",
		FixEN:   "Stop calling and alert; find the extra fetchers; if needed clear the quota with clear_quota/v2 (10 times a month).",
	},
	{
		Code: 45011, Title: "api minute-quota reach limit, must slower, retry next minute",
		ZH: "接口调用频率超过每分钟限制。", EN: "The API's per-minute rate limit was reached.",
		CauseZH: "短时间内调用过多（如同一用户一分钟内多次登录）。", CauseEN: "Too many calls in a short time (e.g. one user logging in many times a minute).",
		FixZH: "至少等待 60 秒后重试，并降低调用频率。", FixEN: "Wait at least 60 seconds before retrying, and slow down.",
	},
	{
		Code: 45047, Title: "out of response count limit",
		ZH: "客服消息下行条数超过上限。", EN: "Too many customer-service messages were sent to the user.",
		CauseZH: "用户 48 小时内未互动，客服消息条数已用完；与 token 无关。", CauseEN: "The user has not interacted recently and the message allowance is used up; not token related.",
		FixZH: "等待用户再次互动后再发送。", FixEN: "Wait until the user interacts again.",
	},
	{
		Code: 47001, Title: "data format error",
		ZH: "请求数据格式错误。", EN: "The request data is malformed.",
		CauseZH: "POST 内容不是合法 JSON 或缺少必填字段。", CauseEN: "The POST body is not valid JSON or lacks a required field.",
		FixZH: "程序缺陷：修正请求体。", FixEN: "A bug: fix the request body.",
	},
	{
		Code: 48001, Title: "api unauthorized",
		ZH: "接口未授权：应用无此接口权限，或 token 类型不对。", EN: "API unauthorized: the app lacks this permission, or the token is of the wrong app type.",
		CauseZH: "账号未认证或未开通该能力；用户未授权所需 scope；不同类型应用的 token 混用。",
		CauseEN: "The account is not verified or lacks the feature; the user did not grant the scope; tokens of different app types were mixed.",
		FixZH:   "在平台开通权限或认证，使用正确应用的 token；重试无用。", FixEN: "Enable the permission or verify the account and use the right app's token; retrying does not help.",
	},
	{
		Code: 48006, Title: "forbid to clear quota because of reaching the limit",
		ZH: "本月清零配额次数（10 次）已用完。", EN: "This month's 10 quota clears are used up.",
		CauseZH: "控制台与接口清零共享每月 10 次额度。", CauseEN: "Console and API clears share a budget of 10 a month.",
		FixZH: "等到下月，或等每日配额自然重置；排查配额消耗源头。", FixEN: "Wait for next month or the daily reset; find what burns the quota.",
	},
	{
		Code: 48017, Title: "request from retired ip",
		ZH: "请求发往了已下线的微信接入 IP。", EN: "The request went to a retired WeChat IP.",
		CauseZH: "hosts 文件或配置中写死了旧的接口 IP。", CauseEN: "An old API IP is hard-coded in a hosts file or the config.",
		FixZH: "使用域名（api.weixin.qq.com 等），删除写死的 IP。", FixEN: "Use the domain names (api.weixin.qq.com and others) and remove hard-coded IPs.",
	},
	{
		Code: 50001, Title: "api unauthorized by user",
		ZH: "用户未授权该接口。", EN: "The user has not authorized this API.",
		CauseZH: "用户未同意相应授权。", CauseEN: "The user did not grant the permission.",
		FixZH: "引导用户授权；重试无用。", FixEN: "Ask the user to grant it; retrying does not help.",
	},
	{
		Code: 50002, Title: "user limited",
		ZH: "用户受限（账号被冻结或封禁）。", EN: "The user is restricted (account frozen or banned).",
		CauseZH: "用户账号违规被限制。", CauseEN: "The user's account was restricted for violations.",
		FixZH: "提示用户；重试无用。", FixEN: "Tell the user; retrying does not help.",
	},
	{
		Code: 61003, Title: "component is not authorized by this account",
		ZH: "该账号未授权给此第三方平台。", EN: "The account has not authorized this third-party platform.",
		CauseZH: "authorizer_appid 填错，或商户从未授权、已取消授权。", CauseEN: "The authorizer_appid is wrong, or the merchant never authorized the platform or revoked it.",
		FixZH: "核对 authorizer_appid；请商户通过授权链接重新授权。", FixEN: "Check the authorizer_appid; have the merchant authorize again through the authorization link.",
	},
	{
		Code: 61004, Title: "access clientip is not registered",
		ZH: "调用方 IP 未登记（第三方平台白名单，也见于服务号取 token）。", EN: "The caller's IP is not registered (third-party platform whitelist; also seen for service-account tokens).",
		CauseZH: "出口 IP 不在开放平台第三方平台或服务号的 IP 白名单中。", CauseEN: "The egress IP is not in the open platform's (or service account's) IP whitelist.",
		FixZH: "把本机出口 IP 加入白名单后重试；不要循环重试。", FixEN: "Add this host's egress IP to the whitelist; do not retry in a loop.",
	},
	{
		Code: 61005, Title: "component ticket is expired",
		ZH: "component_verify_ticket 已过期。", EN: "The component_verify_ticket has expired.",
		CauseZH: "超过 12 小时未收到新的 ticket 推送（授权事件接收 URL 故障）。", CauseEN: "No new ticket was pushed for 12 hours (the authorization event URL is failing).",
		FixZH: "检查授权事件接收 URL，调用 api_start_push_ticket 重新推送。", FixEN: "Check the authorization event URL and call api_start_push_ticket to restart pushes.",
	},
	{
		Code: 61006, Title: "component ticket is invalid",
		ZH: "component_verify_ticket 无效。", EN: "The component_verify_ticket is invalid.",
		CauseZH: "ticket 解密或存储出错，或属于其他第三方平台。", CauseEN: "The ticket was decrypted or stored wrongly, or belongs to another platform.",
		FixZH: "使用最新推送的 ticket；必要时调用 api_start_push_ticket。", FixEN: "Use the latest pushed ticket; call api_start_push_ticket if needed.",
	},
	{
		Code: 61009, Title: "code is invalid",
		ZH: "授权码（authorization_code）无效。", EN: "The authorization code is invalid.",
		CauseZH: "授权码已被使用（只能换取一次）、属于其他第三方平台，或被截断。", CauseEN: "The code was already exchanged (it is single use), belongs to another platform, or was truncated.",
		FixZH: "重试无用：用 api_get_authorizer_list 找回刷新令牌，或请商户重新授权。", FixEN: "Retrying does not help: recover the refresh token with api_get_authorizer_list, or have the merchant authorize again.",
	},
	{
		Code: 61010, Title: "code is expired",
		ZH: "授权码已过期（有效期 1 小时）。", EN: "The authorization code has expired (it lives 1 hour).",
		CauseZH: "收到授权事件后未及时调用 api_query_auth。", CauseEN: "api_query_auth was not called soon enough after the authorization event.",
		FixZH: "用 api_get_authorizer_list 找回刷新令牌，或请商户重新授权；收到事件后立即换取。", FixEN: "Recover the refresh token with api_get_authorizer_list or have the merchant authorize again; exchange codes as soon as the event arrives.",
	},
	{
		Code: 61011, Title: "invalid component",
		ZH: "第三方平台 component_appid 无效。", EN: "The component_appid is invalid.",
		CauseZH: "component_appid 填错或平台未全网发布。", CauseEN: "The component_appid is wrong or the platform is not released.",
		FixZH: "核对开放平台配置。", FixEN: "Check the open platform configuration.",
	},
	{
		Code: 61023, Title: "refresh_token is invalid",
		ZH: "authorizer_refresh_token 无效。", EN: "The authorizer_refresh_token is invalid.",
		CauseZH: "商户取消授权后重新授权，刷新令牌已变更，或存储的令牌丢失或错误。", CauseEN: "The merchant revoked and re-authorized (the refresh token changed), or the stored one is lost or wrong.",
		FixZH: "通过 api_get_authorizer_list 重新获取刷新令牌；为空时用授权码重新换取。", FixEN: "Recover it with api_get_authorizer_list; if absent, exchange a fresh authorization code.",
	},
	{
		Code: 61024, Title: "must use api(api_component_token) to get token for component acct",
		ZH: "第三方平台账号必须用 api_component_token 获取令牌。", EN: "Third-party platform accounts must get tokens with api_component_token.",
		CauseZH: "用第三方平台的 AppID 调用了 /cgi-bin/token。", CauseEN: "/cgi-bin/token was called with a component AppID.",
		FixZH: "程序或配置错误：改用 component token 流程。", FixEN: "A bug or config error: use the component token flow.",
	},
	{
		Code: 76001, Title: "rid not found",
		ZH: "未找到该 rid。", EN: "The rid was not found.",
		CauseZH: "rid 抄写错误或不属于该账号。", CauseEN: "The rid was copied wrongly or belongs to another account.",
		FixZH: "从 errmsg 中完整复制 rid 再查询。", FixEN: "Copy the whole rid from errmsg and query again.",
	},
	{
		Code: 76002, Title: "rid is error",
		ZH: "rid 格式不正确。", EN: "The rid is malformed.",
		CauseZH: "传入的不是 errmsg 里的 rid。", CauseEN: "The value is not a rid from errmsg.",
		FixZH: "使用 errmsg 中 “rid:” 后面的完整值。", FixEN: "Use the full value after \"rid:\" in errmsg.",
	},
	{
		Code: 76003, Title: "rid is not belong to this account",
		ZH: "rid 不属于当前账号。", EN: "The rid belongs to another account.",
		CauseZH: "用了其他 AppID 的 access_token 查询。", CauseEN: "The query used another AppID's access token.",
		FixZH: "用产生该 rid 的账号的 token 查询。", FixEN: "Query with the token of the account that made the request.",
	},
	{
		Code: 76004, Title: "rid time is error",
		ZH: "rid 已过期（超过 7 天）。", EN: "The rid is older than 7 days.",
		CauseZH: "rid 只保留 7 天。", CauseEN: "Rids are kept 7 days.",
		FixZH: "出错时及时记录并查询 rid。", FixEN: "Log rids and look them up promptly.",
	},
	{
		Code: 76021, Title: "cgi_path not found",
		ZH: "cgi_path 不正确。", EN: "The cgi_path is wrong.",
		CauseZH: "cgi_path 带了域名或缺少开头的 /。", CauseEN: "The cgi_path carries a host or lacks the leading /.",
		FixZH: "传入如 /cgi-bin/token 这样的路径。", FixEN: "Pass a path like /cgi-bin/token.",
	},
	{
		Code: 76022, Title: "could not use this cgi_path, no permission",
		ZH: "该接口（如 /sns/*）不支持配额或 rid 查询。", EN: "This API (e.g. /sns/*) is not covered by quota or rid queries.",
		CauseZH: "/sns/* 等接口不在查询范围内。", CauseEN: "/sns/* APIs are out of scope.",
		FixZH: "无需处理，这类接口无法查询。", FixEN: "Nothing to do: these APIs cannot be queried.",
	},
	{
		Code: 87009, Title: "invalid signature",
		ZH: "签名无效：session_key 已失效或签名算法错误。", EN: "Invalid signature: the session_key is stale or the signature is computed wrongly.",
		CauseZH: "用户重新调用 wx.login 后旧 session_key 失效；或签名时对 session_key 做了 base64 解码（应直接用原字符串作为 HMAC 密钥）。",
		CauseEN: "A new wx.login replaced the session_key; or the session_key was base64-decoded before signing (the HMAC key is the string as given).",
		FixZH:   "让用户重新登录以获取新的 session_key。", FixEN: "Have the user log in again for a new session_key.",
	},
	{
		Code: 89501, Title: "ip waiting for admin confirmation",
		ZH: "该 IP 调用正在等待管理员确认。", EN: "Calls from this IP await the administrator's confirmation.",
		CauseZH: "未开启 IP 白名单时，陌生 IP 调用取 token 等接口会触发风险确认。", CauseEN: "Without an IP whitelist, calls from a new IP trigger a risk confirmation.",
		FixZH: "请管理员在微信中确认，或把 IP 加入白名单；停止重试。", FixEN: "Ask the administrator to confirm in WeChat, or whitelist the IP; stop retrying.",
	},
	{
		Code: 89503, Title: "ip needs admin confirmation",
		ZH: "该 IP 调用需要管理员确认，已向管理员推送提醒。", EN: "Calls from this IP need the administrator's confirmation; a prompt was sent.",
		CauseZH: "陌生 IP 首次调用需要凭 AppSecret 的接口。", CauseEN: "A new IP called an API that takes the AppSecret.",
		FixZH: "管理员确认后从同一 IP 重试；长期方案是配置 IP 白名单。", FixEN: "Retry from the same IP after the administrator approves; whitelist the IP for good.",
	},
	{
		Code: 89506, Title: "ip rejected by admin, blocked for 24 hours",
		ZH: "管理员 24 小时内两次拒绝该 IP，已封禁 24 小时。", EN: "The administrator rejected this IP twice in 24 hours: blocked for 24 hours.",
		CauseZH: "管理员拒绝了来自该 IP 的调用。", CauseEN: "The administrator rejected calls from this IP.",
		FixZH: "与管理员核实来源，配置 IP 白名单；不要重试。", FixEN: "Check with the administrator and whitelist the IP; do not retry.",
	},
	{
		Code: 89507, Title: "ip rejected by admin, blocked for 1 hour",
		ZH: "管理员拒绝了该 IP，已封禁 1 小时。", EN: "The administrator rejected this IP: blocked for 1 hour.",
		CauseZH: "管理员拒绝了来自该 IP 的调用。", CauseEN: "The administrator rejected calls from this IP.",
		FixZH: "与管理员核实来源，配置 IP 白名单；1 小时内不要重试。", FixEN: "Check with the administrator and whitelist the IP; do not retry within the hour.",
	},
}

// Explain returns the hint for code and whether the code is known. For an
// unknown code it returns a generic hint that suggests looking the request
// up with getRidInfo.
func Explain(code int) (Hint, bool) {
	i, ok := slices.BinarySearchFunc(hints, code, func(h Hint, c int) int { return h.Code - c })
	if ok {
		return hints[i], true
	}
	return Hint{
		Code: code, Title: "errcode " + strconv.Itoa(code),
		ZH:      "未收录的错误码。",
		EN:      "An errcode this tool does not know.",
		CauseZH: "见微信全局返回码说明。",
		CauseEN: "See WeChat's global return code page.",
		FixZH:   "用 errmsg 中的 rid 调用 getRidInfo（/cgi-bin/openapi/rid/get）查看请求详情，并查阅官方返回码说明。",
		FixEN:   "Look the request up by the rid in errmsg with getRidInfo (/cgi-bin/openapi/rid/get) and check the official return code page.",
	}, false
}

// KnownCodes returns the errcodes Explain knows, in ascending order. The
// slice is a fresh copy.
func KnownCodes() []int {
	codes := make([]int, len(hints))
	for i, h := range hints {
		codes[i] = h.Code
	}
	return codes
}
