package msgcrypt

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseEvent(t *testing.T) {
	for _, tc := range []struct {
		name string
		xml  string
		want Event
		err  string // substring of the error; "" for none
	}{
		{
			name: "verify ticket (WeChat's documented example)",
			xml: `<xml><AppId>some_appid</AppId><CreateTime>1413192605</CreateTime>` +
				`<InfoType>component_verify_ticket</InfoType><ComponentVerifyTicket>some_verify_ticket</ComponentVerifyTicket></xml>`,
			want: Event{AppID: "some_appid", CreateTime: time.Unix(1413192605, 0), InfoType: InfoVerifyTicket, VerifyTicket: "some_verify_ticket"},
		},
		{
			name: "authorized",
			xml: `<xml><AppId><![CDATA[第三方平台appid]]></AppId><CreateTime>1413192760</CreateTime><InfoType><![CDATA[authorized]]></InfoType>` +
				`<AuthorizerAppid><![CDATA[公众号appid]]></AuthorizerAppid><AuthorizationCode><![CDATA[授权码]]></AuthorizationCode>` +
				`<AuthorizationCodeExpiredTime>1413196360</AuthorizationCodeExpiredTime><PreAuthCode><![CDATA[预授权码]]></PreAuthCode></xml>`,
			want: Event{AppID: "第三方平台appid", CreateTime: time.Unix(1413192760, 0), InfoType: InfoAuthorized,
				AuthorizerAppID: "公众号appid", AuthorizationCode: "授权码", AuthorizationCodeExpiredTime: time.Unix(1413196360, 0), PreAuthCode: "预授权码"},
		},
		{
			name: "updateauthorized",
			xml: `<xml><AppId>c</AppId><CreateTime>1</CreateTime><InfoType>updateauthorized</InfoType>` +
				`<AuthorizerAppid>a</AuthorizerAppid><AuthorizationCode>code</AuthorizationCode></xml>`,
			want: Event{AppID: "c", CreateTime: time.Unix(1, 0), InfoType: InfoUpdateAuthorized, AuthorizerAppID: "a", AuthorizationCode: "code"},
		},
		{
			name: "unauthorized",
			xml:  `<xml><AppId>c</AppId><CreateTime>2</CreateTime><InfoType>unauthorized</InfoType><AuthorizerAppid>a</AuthorizerAppid></xml>`,
			want: Event{AppID: "c", CreateTime: time.Unix(2, 0), InfoType: InfoUnauthorized, AuthorizerAppID: "a"},
		},
		{
			name: "an InfoType this package does not know",
			xml:  `<xml><AppId>c</AppId><CreateTime>3</CreateTime><InfoType>notify_third_fasteregister</InfoType></xml>`,
			want: Event{AppID: "c", CreateTime: time.Unix(3, 0), InfoType: "notify_third_fasteregister"},
		},
		{name: "ticket missing", xml: `<xml><AppId>c</AppId><CreateTime>3</CreateTime><InfoType>component_verify_ticket</InfoType></xml>`, err: "ComponentVerifyTicket is missing"},
		{name: "code missing", xml: `<xml><AppId>c</AppId><CreateTime>3</CreateTime><InfoType>authorized</InfoType><AuthorizerAppid>a</AuthorizerAppid></xml>`, err: "AuthorizationCode is missing"},
		{name: "authorizer missing", xml: `<xml><AppId>c</AppId><CreateTime>3</CreateTime><InfoType>unauthorized</InfoType></xml>`, err: "AuthorizerAppid is missing"},
		{name: "every problem at once", xml: `<xml><CreateTime>x</CreateTime></xml>`, err: "InfoType is missing, AppId is missing, CreateTime is not a number of seconds"},
		{name: "not XML", xml: `{"InfoType":"authorized"}`, err: "not XML"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseEvent([]byte(tc.xml))
			if tc.err != "" {
				if !errors.Is(err, ErrEvent) || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseEvent = %v; want ErrEvent with %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseEvent = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestEventXMLRoundTrip(t *testing.T) {
	at := time.Unix(1_700_000_000, 0)
	for _, e := range []Event{
		{AppID: "wxc", CreateTime: at, InfoType: InfoVerifyTicket, VerifyTicket: "ticket@@@x]]>y"},
		{AppID: "wxc", CreateTime: at, InfoType: InfoAuthorized, AuthorizerAppID: "wxa", AuthorizationCode: "queryauthcode@@@1",
			AuthorizationCodeExpiredTime: at.Add(time.Hour), PreAuthCode: "preauthcode@@@1"},
		{AppID: "wxc", CreateTime: at, InfoType: InfoUpdateAuthorized, AuthorizerAppID: "wxa", AuthorizationCode: "c2",
			AuthorizationCodeExpiredTime: at.Add(time.Hour), PreAuthCode: "p2"},
		{AppID: "wxc", CreateTime: at, InfoType: InfoUnauthorized, AuthorizerAppID: "wxa"},
	} {
		got, err := ParseEvent(e.XML())
		if err != nil || got != e {
			t.Errorf("ParseEvent(%s) = %+v, %v; want %+v", e.XML(), got, err, e)
		}
		if !e.InfoType.Known() {
			t.Errorf("%q.Known() = false", e.InfoType)
		}
	}
	if InfoType("component_verify_ticket ").Known() {
		t.Error("Known accepts a near miss")
	}
}

func FuzzParseEvent(f *testing.F) {
	at := time.Unix(1_700_000_000, 0)
	f.Add(Event{AppID: "wxc", CreateTime: at, InfoType: InfoAuthorized, AuthorizerAppID: "wxa", AuthorizationCode: "c",
		AuthorizationCodeExpiredTime: at, PreAuthCode: "p"}.XML())
	f.Add([]byte(`<xml><InfoType>unauthorized</InfoType></xml>`))
	f.Add([]byte(`<xml><AppId>c</AppId><CreateTime>1</CreateTime><InfoType>authorized</InfoType><AuthorizerAppid>a</AuthorizerAppid><AuthorizationCode>x</AuthorizationCode></xml>`))
	f.Add([]byte(`<xml><CreateTime>-1</CreateTime>`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		e, err := ParseEvent(msg) // must not panic
		if err != nil {
			return
		}
		// What parses, marshals back to the same event (for the fields its
		// InfoType carries).
		again, err := ParseEvent(e.XML())
		if err != nil {
			t.Fatalf("ParseEvent(XML(%+v)) = %v", e, err)
		}
		if e.InfoType.Known() && again != e {
			t.Fatalf("round trip: %+v; want %+v", again, e)
		}
	})
}
