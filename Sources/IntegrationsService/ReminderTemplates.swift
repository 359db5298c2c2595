import Mustache

/// The renewal reminder, as Mustache templates: a subject, a plain-text part, an HTML part.
/// Values: `license_id`, `product`, `expires`, `days_left`, `grace_ends`, `features`
/// (a list), `renewal_url`, and one of `expiring`, `in_grace`, `ended` set.
enum ReminderTemplates {
    static let subject = """
        {{#expiring}}Your {{product}} license expires in {{days_left}} day{{^one_day}}s{{/one_day}}{{/expiring}}\
        {{#in_grace}}Your {{product}} license has expired: grace period until {{grace_ends}}{{/in_grace}}\
        {{#ended}}Your {{product}} license has ended{{/ended}}
        """

    static let text = """
        Hello,

        {{#expiring}}your {{product}} license {{license_id}} expires on {{expires}} ({{days_left}} day{{^one_day}}s{{/one_day}} from now).{{/expiring}}
        {{#in_grace}}your {{product}} license {{license_id}} expired on {{expires}}. It keeps working until {{grace_ends}} while you renew.{{/in_grace}}
        {{#ended}}your {{product}} license {{license_id}} expired on {{expires}} and its grace period has ended.{{/ended}}

        {{#has_features}}It includes: {{#features}}{{name}}{{^last}}, {{/last}}{{/features}}.{{/has_features}}

        Renew here: {{renewal_url}}

        This message was sent because the license is about to end. Your license key is not in it.
        """

    static let html = """
        <!doctype html>
        <html><body style="font-family: sans-serif">
        <p>Hello,</p>
        {{#expiring}}<p>Your <strong>{{product}}</strong> license <code>{{license_id}}</code> expires on <strong>{{expires}}</strong> ({{days_left}} day{{^one_day}}s{{/one_day}} from now).</p>{{/expiring}}
        {{#in_grace}}<p>Your <strong>{{product}}</strong> license <code>{{license_id}}</code> expired on {{expires}}. It keeps working until <strong>{{grace_ends}}</strong> while you renew.</p>{{/in_grace}}
        {{#ended}}<p>Your <strong>{{product}}</strong> license <code>{{license_id}}</code> expired on {{expires}} and its grace period has ended.</p>{{/ended}}
        {{#has_features}}<p>It includes: {{#features}}{{name}}{{^last}}, {{/last}}{{/features}}.</p>{{/has_features}}
        <p><a href="{{renewal_url}}">Renew your license</a></p>
        </body></html>
        """

    static let library: MustacheLibrary = {
        var library = MustacheLibrary()
        try! library.register(subject, named: "subject")
        try! library.register(text, named: "text")
        try! library.register(html, named: "html")
        return library
    }()

    static func render(_ values: [String: Any]) -> (subject: String, text: String, html: String) {
        (
            library.render(values, withTemplate: "subject")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "",
            library.render(values, withTemplate: "text") ?? "", library.render(values, withTemplate: "html") ?? ""
        )
    }
}
