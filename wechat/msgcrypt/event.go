package msgcrypt

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// InfoType is the kind of an Open Platform authorization event.
type InfoType string

// The authorization events a component receives at its event URL.
const (
	// InfoVerifyTicket carries a new component_verify_ticket, pushed every
	// 10 minutes and valid 12 hours.
	InfoVerifyTicket InfoType = "component_verify_ticket"
	// InfoAuthorized reports a new authorization, with an authorization
	// code to exchange through api_query_auth.
	InfoAuthorized InfoType = "authorized"
	// InfoUpdateAuthorized reports a changed authorization (other
	// permissions), with a new authorization code.
	InfoUpdateAuthorized InfoType = "updateauthorized"
	// InfoUnauthorized reports that the account revoked the authorization:
	// its refresh token no longer works (61023).
	InfoUnauthorized InfoType = "unauthorized"
)

// Known reports whether t is one of the four events above. WeChat pushes
// other InfoTypes to the same URL (fast registration, audits, …); a
// receiver answers "success" to them and ignores them.
func (t InfoType) Known() bool {
	switch t {
	case InfoVerifyTicket, InfoAuthorized, InfoUpdateAuthorized, InfoUnauthorized:
		return true
	}
	return false
}

// ErrEvent reports a decrypted event that is not WeChat's XML or lacks a
// field its InfoType requires.
var ErrEvent = errors.New("msgcrypt: malformed event")

// Event is a decrypted Open Platform authorization event. Which fields are
// set depends on InfoType: VerifyTicket for InfoVerifyTicket;
// AuthorizerAppID for the others; AuthorizationCode,
// AuthorizationCodeExpiredTime and PreAuthCode for InfoAuthorized and
// InfoUpdateAuthorized.
type Event struct {
	AppID      string // the component AppID
	CreateTime time.Time
	InfoType   InfoType

	VerifyTicket string // ComponentVerifyTicket

	AuthorizerAppID              string
	AuthorizationCode            string
	AuthorizationCodeExpiredTime time.Time
	PreAuthCode                  string
}

// eventXML is the wire form of Event.
type eventXML struct {
	XMLName                      xml.Name `xml:"xml"`
	AppID                        string   `xml:"AppId"`
	CreateTime                   string   `xml:"CreateTime"`
	InfoType                     string   `xml:"InfoType"`
	ComponentVerifyTicket        string   `xml:"ComponentVerifyTicket"`
	AuthorizerAppid              string   `xml:"AuthorizerAppid"`
	AuthorizationCode            string   `xml:"AuthorizationCode"`
	AuthorizationCodeExpiredTime string   `xml:"AuthorizationCodeExpiredTime"`
	PreAuthCode                  string   `xml:"PreAuthCode"`
}

// ParseEvent reads a decrypted authorization event. For the four known
// InfoTypes it checks that the fields the event needs are present; an
// unknown InfoType is returned without further checks (see InfoType.Known).
// Errors wrap ErrEvent and name the missing field, never a value.
func ParseEvent(msg []byte) (Event, error) {
	var x eventXML
	if err := xml.Unmarshal(msg, &x); err != nil {
		return Event{}, fmt.Errorf("%w: not XML", ErrEvent)
	}
	trim := strings.TrimSpace
	e := Event{
		AppID:             trim(x.AppID),
		InfoType:          InfoType(trim(x.InfoType)),
		VerifyTicket:      trim(x.ComponentVerifyTicket),
		AuthorizerAppID:   trim(x.AuthorizerAppid),
		AuthorizationCode: trim(x.AuthorizationCode),
		PreAuthCode:       trim(x.PreAuthCode),
	}
	var problems []string
	missing := func(field, v string) {
		if v == "" {
			problems = append(problems, field+" is missing")
		}
	}
	missing("InfoType", string(e.InfoType))
	missing("AppId", e.AppID)
	var ok bool
	if e.CreateTime, ok = unixField(x.CreateTime); !ok {
		problems = append(problems, "CreateTime is not a number of seconds")
	}
	switch e.InfoType {
	case InfoVerifyTicket:
		missing("ComponentVerifyTicket", e.VerifyTicket)
	case InfoAuthorized, InfoUpdateAuthorized:
		missing("AuthorizerAppid", e.AuthorizerAppID)
		missing("AuthorizationCode", e.AuthorizationCode)
		if x.AuthorizationCodeExpiredTime != "" {
			if e.AuthorizationCodeExpiredTime, ok = unixField(x.AuthorizationCodeExpiredTime); !ok {
				problems = append(problems, "AuthorizationCodeExpiredTime is not a number of seconds")
			}
		}
	case InfoUnauthorized:
		missing("AuthorizerAppid", e.AuthorizerAppID)
	}
	if len(problems) > 0 {
		return e, fmt.Errorf("%w: %s", ErrEvent, strings.Join(problems, ", "))
	}
	return e, nil
}

func unixField(s string) (time.Time, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, false
	}
	return time.Unix(n, 0), true
}

// XML returns the event in WeChat's form, the plaintext a push carries:
// <xml><AppId>…</AppId><CreateTime>…</CreateTime><InfoType>…</InfoType>…</xml>
// with the fields of its InfoType. It is the inverse of ParseEvent, for
// simulators and tests.
func (e Event) XML() []byte {
	var b bytes.Buffer
	b.WriteString("<xml>")
	elem := func(name, v string) {
		b.WriteString("<" + name + ">")
		writeCDATA(&b, v)
		b.WriteString("</" + name + ">")
	}
	num := func(name string, t time.Time) {
		b.WriteString("<" + name + ">" + strconv.FormatInt(t.Unix(), 10) + "</" + name + ">")
	}
	elem("AppId", e.AppID)
	num("CreateTime", e.CreateTime)
	elem("InfoType", string(e.InfoType))
	switch e.InfoType {
	case InfoVerifyTicket:
		elem("ComponentVerifyTicket", e.VerifyTicket)
	case InfoAuthorized, InfoUpdateAuthorized:
		elem("AuthorizerAppid", e.AuthorizerAppID)
		elem("AuthorizationCode", e.AuthorizationCode)
		if !e.AuthorizationCodeExpiredTime.IsZero() {
			num("AuthorizationCodeExpiredTime", e.AuthorizationCodeExpiredTime)
		}
		elem("PreAuthCode", e.PreAuthCode)
	default:
		if e.AuthorizerAppID != "" {
			elem("AuthorizerAppid", e.AuthorizerAppID)
		}
	}
	b.WriteString("</xml>")
	return b.Bytes()
}
