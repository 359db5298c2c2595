import Mustache

/// The console's pages as Mustache templates. `{{value}}` is HTML-escaped; the only raw
/// insertions (`{{{…}}}`) are the rendered page inside the layout and the server-drawn
/// SVG charts, both produced from escaped values.
enum Templates {
    static let layout = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}} · License Manager</title>
        <link rel="stylesheet" href="/static/console.css">
        <script src="/static/console.js" defer></script>
        </head>
        <body>
        <a class="skip" href="#main">Skip to content</a>
        <header>
        <a class="brand" href="/">License Manager</a>
        {{#hasNav}}<nav aria-label="Main"><ul>{{#nav}}<li><a href="{{href}}"{{#current}} aria-current="page"{{/current}}>{{label}}</a></li>{{/nav}}</ul></nav>{{/hasNav}}
        {{#signedIn}}<form method="post" action="/sign-out" class="sign-out"><input type="hidden" name="_csrf" value="{{csrf}}"><span class="who">{{who}}</span> <button type="submit">Sign out</button></form>{{/signedIn}}
        </header>
        <main id="main">
        {{#notice}}<p class="notice" role="status">{{notice}}</p>{{/notice}}
        {{#error}}<p class="error" role="alert">{{error}}</p>{{/error}}
        {{{body}}}
        </main>
        </body>
        </html>
        """

    static let signIn = """
        <h1>Sign in</h1>
        <div class="columns">
        <section aria-labelledby="holder-sign-in">
        <h2 id="holder-sign-in">License holders</h2>
        <p>Sign in with your license key to see your license, its features, your machines and how to renew.</p>
        <form method="post" action="/sign-in/holder">
        <input type="hidden" name="_csrf" value="{{csrf}}">
        <label for="license_key">License key</label>
        <input id="license_key" name="license_key" autocomplete="off" spellcheck="false" required maxlength="100" placeholder="XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX">
        <button type="submit">Sign in with license key</button>
        </form>
        <p class="hint">Your vendor can also send you a sign-in link that shows every license of your company.</p>
        </section>
        <section aria-labelledby="operator-sign-in">
        <h2 id="operator-sign-in">Operators</h2>
        <p>Sign in with your own API key; what you see and may do follows its role.</p>
        <form method="post" action="/sign-in/operator">
        <input type="hidden" name="_csrf" value="{{csrf}}">
        <label for="api_key">API key</label>
        <input id="api_key" name="api_key" type="password" autocomplete="off" required maxlength="200">
        <button type="submit">Sign in with API key</button>
        </form>
        </section>
        </div>
        """

    static let confirmLink = """
        <h1>{{heading}}</h1>
        <p>{{explanation}}</p>
        <form method="post" action="{{action}}">
        <input type="hidden" name="_csrf" value="{{csrf}}">
        <input type="hidden" name="token" value="{{token}}">
        <button type="submit">{{button}}</button>
        </form>
        """

    static let revealed = """
        <h1>Your license key</h1>
        <p>This is the only time the key is shown. Copy it now and keep it somewhere safe; this page cannot show it again.</p>
        <p class="key"><code id="revealed-key">{{key}}</code></p>
        <p>License <code>{{licenseID}}</code>. You can sign in with this key to see your license.</p>
        <p><a href="/sign-in">Sign in</a></p>
        """

    static let holder = """
        <h1>Your licenses</h1>
        {{#parts}}<p class="warning" role="status">{{.}}</p>{{/parts}}
        {{^licenses}}<p>No licenses are registered to you.</p>{{/licenses}}
        {{#licenses}}
        <section class="license" aria-labelledby="lic-{{id}}">
        <h2 id="lic-{{id}}">{{product}} <span class="plan">{{plan}}</span></h2>
        <p class="state state-{{stateClass}}" data-test="state"><strong>{{state}}.</strong> {{stateSentence}}</p>
        <dl class="facts">
        <dt>License</dt><dd><code>{{id}}</code></dd>
        <dt>Key</dt><dd><code>{{keyPrefix}}…</code></dd>
        <dt>Type</dt><dd>{{type}}</dd>
        <dt>Issued</dt><dd>{{#issued}}<time datetime="{{iso}}">{{text}}</time>{{/issued}}</dd>
        <dt>Ends</dt><dd>{{#expires}}{{#has}}<time datetime="{{iso}}">{{text}}</time>{{/has}}{{^has}}never{{/has}}{{/expires}}</dd>
        </dl>
        <h3>Features</h3>
        <ul class="features">
        {{#included}}<li class="included"><span aria-hidden="true">✔</span> {{.}} <span class="tag">included</span></li>{{/included}}
        {{#notIncluded}}<li class="excluded"><span aria-hidden="true">✘</span> {{.}} <span class="tag">not in your plan</span></li>{{/notIncluded}}
        {{^hasFeatures}}<li>The license enables the whole product.</li>{{/hasFeatures}}
        </ul>
        {{#hasQuotas}}<h3>Usage quotas</h3>
        <table><thead><tr><th scope="col">Feature</th><th scope="col">Used</th><th scope="col">Quota</th><th scope="col">Period</th></tr></thead><tbody>
        {{#quotas}}<tr{{#exceeded}} class="over"{{/exceeded}}><td>{{feature}}</td><td>{{used}}</td><td>{{limit}}</td><td>{{period}}{{#exceeded}} — used up{{/exceeded}}</td></tr>{{/quotas}}
        </tbody></table>{{/hasQuotas}}
        <h3>Machines <span class="count">{{machineCount}}{{#maxMachines}} of {{maxMachines}}{{/maxMachines}}</span></h3>
        {{#hasMachines}}<table><thead><tr><th scope="col">Machine</th><th scope="col">First seen</th><th scope="col">Last seen</th><th scope="col"><span class="sr">Action</span></th></tr></thead><tbody>
        {{#machines}}<tr><td>{{name}}</td><td><time datetime="{{first.iso}}">{{first.text}}</time></td><td><time datetime="{{last.iso}}">{{last.text}}</time></td>
        <td><form method="post" action="/my/deactivate"><input type="hidden" name="_csrf" value="{{csrf}}"><input type="hidden" name="license_id" value="{{licenseID}}"><input type="hidden" name="machine_id" value="{{id}}"><button type="submit" aria-label="Deactivate {{name}}">Deactivate</button></form></td></tr>{{/machines}}
        </tbody></table>{{/hasMachines}}
        {{^hasMachines}}<p>No machine is activated.</p>{{/hasMachines}}
        <h3>Seats in use <span class="count">{{seatCount}}{{#maxSeats}} of {{maxSeats}}{{/maxSeats}}</span></h3>
        {{#hasSeats}}<ul>{{#seats}}<li>{{user}} since <time datetime="{{since.iso}}">{{since.text}}</time></li>{{/seats}}</ul>{{/hasSeats}}
        {{^hasSeats}}<p>No seat is in use.</p>{{/hasSeats}}
        <h3>Renewal</h3>
        <p data-test="renewal">{{renewalSentence}}</p>
        {{#subscription}}<p>Subscription: {{.}}</p>{{/subscription}}
        {{#renewalURL}}<p><a class="button" href="{{renewalURL}}" rel="noopener">Renew this license</a></p>{{/renewalURL}}
        <h3>Offline license file</h3>
        <form method="post" action="/my/offline" class="inline">
        <input type="hidden" name="_csrf" value="{{csrf}}"><input type="hidden" name="license_id" value="{{id}}">
        <label for="fp-{{id}}">Machine fingerprint (the product shows it under “Offline activation”)</label>
        <input id="fp-{{id}}" name="fingerprint" required maxlength="200" autocomplete="off">
        <button type="submit">Download license file</button>
        </form>
        </section>
        {{/licenses}}
        """

    static let licenses = """
        <h1>Licenses</h1>
        <form method="get" action="/licenses" class="search" role="search">
        <label for="q">Key prefix or license id</label><input id="q" name="q" value="{{q}}" maxlength="100">
        <label for="customer">Customer id</label><input id="customer" name="customer" value="{{customer}}" maxlength="100">
        <label for="product">Product</label><select id="product" name="product"><option value="">Any</option>{{#products}}<option value="{{id}}"{{#selected}} selected{{/selected}}>{{name}}</option>{{/products}}</select>
        <label for="state">State</label><select id="state" name="state">{{#states}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/states}}</select>
        <button type="submit">Search</button>
        </form>
        {{#parts}}<p class="warning" role="status">{{.}}</p>{{/parts}}
        <table><thead><tr><th scope="col">License</th><th scope="col">Key</th><th scope="col">Product</th><th scope="col">Customer</th><th scope="col">State</th><th scope="col">Ends</th></tr></thead><tbody>
        {{#rows}}<tr><td><a href="/licenses/{{id}}">{{id}}</a></td><td><code>{{keyPrefix}}…</code></td><td>{{product}}</td><td>{{customer}}</td><td>{{state}}</td><td>{{#expires}}<time datetime="{{iso}}">{{text}}</time>{{/expires}}</td></tr>{{/rows}}
        </tbody></table>
        {{^rows}}<p>No license matches.</p>{{/rows}}
        """

    static let license = """
        <h1>License <code>{{id}}</code></h1>
        {{#parts}}<p class="warning" role="status">{{.}}</p>{{/parts}}
        <p class="state state-{{stateClass}}" data-test="state"><strong>{{state}}.</strong> {{stateSentence}}</p>
        <dl class="facts">
        <dt>Product</dt><dd>{{product}}</dd><dt>Plan</dt><dd>{{plan}}</dd><dt>Customer</dt><dd>{{customer}}</dd>
        <dt>Key</dt><dd><code>{{keyPrefix}}…</code></dd><dt>Type</dt><dd>{{type}}</dd>
        <dt>Features</dt><dd>{{features}}</dd>
        <dt>Limits</dt><dd>{{limits}}</dd>
        {{#subscription}}<dt>Subscription</dt><dd>{{.}}</dd>{{/subscription}}
        </dl>
        {{#hasActions}}<h2>Actions</h2><ul class="actions">
        {{#actions}}<li><a class="button{{#danger}} danger{{/danger}}" href="/licenses/{{id}}/confirm?action={{name}}">{{label}}</a></li>{{/actions}}
        </ul>{{/hasActions}}
        {{#mayChangeEntitlements}}<details><summary>Change entitlements</summary>
        <form method="post" action="/licenses/{{id}}/entitlements">
        <input type="hidden" name="_csrf" value="{{csrf}}">
        <label for="features">Features (comma-separated)</label><input id="features" name="features" value="{{features}}" maxlength="2000">
        <label for="max_machines">Machines</label><input id="max_machines" name="max_machines" type="number" min="0" max="1000000" value="{{maxMachines}}">
        <label for="max_seats">Seats</label><input id="max_seats" name="max_seats" type="number" min="0" max="1000000" value="{{maxSeats}}">
        <button type="submit">Save entitlements</button>
        </form></details>{{/mayChangeEntitlements}}
        <h2>Machines</h2>
        {{#hasMachines}}<table><thead><tr><th scope="col">Machine</th><th scope="col">Platform</th><th scope="col">First seen</th><th scope="col">Last seen</th>{{#mayDeactivate}}<th scope="col"><span class="sr">Action</span></th>{{/mayDeactivate}}</tr></thead><tbody>
        {{#machines}}<tr><td>{{name}}</td><td>{{platform}}</td><td><time datetime="{{first.iso}}">{{first.text}}</time></td><td><time datetime="{{last.iso}}">{{last.text}}</time></td>
        {{#mayDeactivate}}<td><form method="post" action="/licenses/{{licenseID}}/deactivate"><input type="hidden" name="_csrf" value="{{csrf}}"><input type="hidden" name="machine_id" value="{{id}}"><button type="submit" aria-label="Deactivate {{name}}">Deactivate</button></form></td>{{/mayDeactivate}}</tr>{{/machines}}
        </tbody></table>{{/hasMachines}}{{^hasMachines}}<p>No machine is activated.</p>{{/hasMachines}}
        <h2>Seats</h2>{{#hasSeats}}<ul>{{#seats}}<li>{{user}} ({{client}}) since <time datetime="{{since.iso}}">{{since.text}}</time></li>{{/seats}}</ul>{{/hasSeats}}{{^hasSeats}}<p>No seat is in use.</p>{{/hasSeats}}
        <h2>Usage, last 30 days</h2>{{#hasUsage}}<table><thead><tr><th scope="col">Feature</th><th scope="col">Quantity</th></tr></thead><tbody>{{#usage}}<tr><td>{{feature}}</td><td>{{quantity}}</td></tr>{{/usage}}</tbody></table>{{/hasUsage}}{{^hasUsage}}<p>No usage recorded.</p>{{/hasUsage}}
        <h2>Compliance alerts</h2>{{#hasAlerts}}<ul>{{#alerts}}<li>{{rule}}: {{detail}} (<time datetime="{{raised.iso}}">{{raised.text}}</time>){{#acknowledged}} — acknowledged{{/acknowledged}}</li>{{/alerts}}</ul>{{/hasAlerts}}{{^hasAlerts}}<p>No alerts.</p>{{/hasAlerts}}
        <h2>Timeline</h2>{{#hasTimeline}}<ol class="timeline">{{#timeline}}<li><time datetime="{{at.iso}}" data-time>{{at.text}}</time> {{action}} by {{actor}}</li>{{/timeline}}</ol>{{/hasTimeline}}{{^hasTimeline}}<p>{{timelineNote}}</p>{{/hasTimeline}}
        """

    static let confirmAction = """
        <h1>{{label}} license <code>{{id}}</code>?</h1>
        <p>{{explanation}}</p>
        <form method="post" action="/licenses/{{id}}/{{name}}">
        <input type="hidden" name="_csrf" value="{{csrf}}">
        {{#needsReason}}<label for="reason">Reason (kept in the audit log{{#shownToHolder}} and shown to the license holder{{/shownToHolder}})</label><input id="reason" name="reason" required maxlength="200">{{/needsReason}}
        <button type="submit" class="{{#danger}}danger{{/danger}}">{{label}}</button> <a href="/licenses/{{id}}">Cancel</a>
        </form>
        """

    static let catalogue = """
        <h1>Products and policies</h1>
        {{#parts}}<p class="warning" role="status">{{.}}</p>{{/parts}}
        {{#products}}<section><h2>{{name}} <code>{{code}}</code></h2>
        {{#hasPolicies}}<table><thead><tr><th scope="col">Policy</th><th scope="col">Type</th><th scope="col">Duration</th><th scope="col">Grace</th><th scope="col">Machines</th><th scope="col">Seats</th><th scope="col">Features</th></tr></thead><tbody>
        {{#policies}}<tr><td>{{name}}</td><td>{{type}}</td><td>{{duration}}</td><td>{{grace}}</td><td>{{machines}}</td><td>{{seats}}</td><td>{{features}}</td></tr>{{/policies}}</tbody></table>{{/hasPolicies}}
        {{^hasPolicies}}<p>No policies.</p>{{/hasPolicies}}</section>{{/products}}
        {{^products}}<p>No products yet.</p>{{/products}}
        """

    static let customers = """
        <h1>Customers</h1>
        {{#parts}}<p class="warning" role="status">{{.}}</p>{{/parts}}
        {{#link}}<p class="notice" role="status">Sign-in link for {{name}}, single use, until <time datetime="{{until.iso}}" data-time>{{until.text}}</time>: <code id="sign-in-link">{{url}}</code></p>{{/link}}
        <table><thead><tr><th scope="col">Customer</th><th scope="col">Name</th><th scope="col">E-mail</th><th scope="col"><a href="/licenses">Licenses</a></th>{{#mayLink}}<th scope="col"><span class="sr">Action</span></th>{{/mayLink}}</tr></thead><tbody>
        {{#rows}}<tr><td><code>{{id}}</code></td><td>{{name}}</td><td>{{email}}</td><td><a href="/licenses?customer={{id}}">licenses</a></td>
        {{#mayLink}}<td><form method="post" action="/customers/{{id}}/sign-in-link"><input type="hidden" name="_csrf" value="{{csrf}}"><button type="submit" aria-label="Sign-in link for {{name}}">Sign-in link</button></form></td>{{/mayLink}}</tr>{{/rows}}
        </tbody></table>
        """

    static let alerts = """
        <h1>Compliance alerts</h1>
        {{#parts}}<p class="warning" role="status">{{.}}</p>{{/parts}}
        <table><thead><tr><th scope="col">Alert</th><th scope="col">License</th><th scope="col">What happened</th><th scope="col">Raised</th><th scope="col">Status</th></tr></thead><tbody>
        {{#rows}}<tr><td>{{rule}}</td><td><a href="/licenses/{{licenseID}}">{{licenseID}}</a></td><td>{{detail}}</td><td><time datetime="{{raised.iso}}">{{raised.text}}</time></td>
        <td>{{#acknowledged}}Acknowledged{{/acknowledged}}{{^acknowledged}}{{#mayAck}}<form method="post" action="/alerts/{{id}}/acknowledge"><input type="hidden" name="_csrf" value="{{csrf}}"><button type="submit">Acknowledge</button></form>{{/mayAck}}{{^mayAck}}Open{{/mayAck}}{{/acknowledged}}</td></tr>{{/rows}}
        </tbody></table>
        {{^rows}}<p>No alerts.</p>{{/rows}}
        """

    static let reports = """
        <h1>Reports</h1>
        <nav aria-label="Reports" class="tabs"><ul>{{#kinds}}<li><a href="/reports?kind={{kind}}"{{#current}} aria-current="page"{{/current}}>{{label}}</a></li>{{/kinds}}</ul></nav>
        {{#parts}}<p class="warning" role="status">{{.}}</p>{{/parts}}
        {{#summary}}<p>{{.}}</p>{{/summary}}
        {{#chart}}<figure>{{{svg}}}<figcaption>{{caption}}</figcaption></figure>{{/chart}}
        <p><a class="button" href="/reports/{{kind}}.csv" download>Download CSV</a></p>
        <table><thead><tr>{{#columns}}<th scope="col">{{.}}</th>{{/columns}}</tr></thead><tbody>
        {{#rows}}<tr>{{#cells}}<td>{{.}}</td>{{/cells}}</tr>{{/rows}}
        </tbody></table>
        {{^rows}}<p>Nothing to report for this period.</p>{{/rows}}
        """

    static let webhooks = """
        <h1>Webhooks</h1>
        {{#parts}}<p class="warning" role="status">{{.}}</p>{{/parts}}
        <h2>Endpoints</h2>
        <table><thead><tr><th scope="col">Endpoint</th><th scope="col">Events</th><th scope="col">Status</th></tr></thead><tbody>
        {{#endpoints}}<tr><td>{{url}}</td><td>{{events}}</td><td>{{status}}</td></tr>{{/endpoints}}
        </tbody></table>
        <h2>Recent deliveries</h2>
        <table><thead><tr><th scope="col">Event</th><th scope="col">Type</th><th scope="col">Status</th><th scope="col">Attempts</th><th scope="col">Last answer</th></tr></thead><tbody>
        {{#deliveries}}<tr><td><code>{{event}}</code></td><td>{{type}}</td><td>{{status}}</td><td>{{attempts}}</td><td>{{answer}}</td></tr>{{/deliveries}}
        </tbody></table>
        """

    static let message = """
        <h1>{{heading}}</h1>
        <p>{{text}}</p>
        <p><a href="{{back}}">Back</a></p>
        """

    static let library: MustacheLibrary = {
        var library = MustacheLibrary()
        for (name, text) in [
            ("layout", layout), ("signIn", signIn), ("confirmLink", confirmLink), ("revealed", revealed), ("holder", holder), ("licenses", licenses),
            ("license", license), ("confirmAction", confirmAction), ("catalogue", catalogue), ("customers", customers), ("alerts", alerts),
            ("reports", reports), ("webhooks", webhooks), ("message", message),
        ] {
            try! library.register(text, named: name)
        }
        return library
    }()
}
