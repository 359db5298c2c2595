/// The console's stylesheet and its one script, served from /static. Plain CSS, readable on
/// a phone; the script only shows dates in the viewer's locale (pages work without it).
enum Assets {
    static let css = """
        :root { --ink: #1d2430; --muted: #5b6574; --line: #d5dbe3; --accent: #1f5fbf; --bad: #b3261e; --good: #1e7b34; --warn: #8a5a00; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 16px/1.5 system-ui, sans-serif; color: var(--ink); background: #f6f8fa; }
        .skip { position: absolute; left: -999px; } .skip:focus { left: 8px; top: 8px; background: #fff; padding: 4px 8px; }
        header { display: flex; flex-wrap: wrap; align-items: center; gap: 12px 24px; padding: 12px 20px; background: #fff; border-bottom: 1px solid var(--line); }
        .brand { font-weight: 700; color: var(--ink); text-decoration: none; }
        nav ul { display: flex; flex-wrap: wrap; gap: 4px 16px; list-style: none; margin: 0; padding: 0; }
        nav a[aria-current] { font-weight: 700; text-decoration: underline; }
        .sign-out { margin-left: auto; display: flex; gap: 8px; align-items: center; } .who { color: var(--muted); }
        main { max-width: 1100px; margin: 0 auto; padding: 16px 20px 48px; }
        a { color: var(--accent); } a:focus, button:focus, input:focus, select:focus { outline: 3px solid #8ab4f8; outline-offset: 1px; }
        table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; background: #fff; }
        th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
        label { display: block; margin: 8px 0 2px; font-weight: 600; }
        input, select { font: inherit; padding: 6px 8px; border: 1px solid #9aa5b1; border-radius: 4px; width: 100%; max-width: 32em; }
        button, .button { font: inherit; display: inline-block; margin-top: 8px; padding: 6px 14px; border: 1px solid var(--accent); border-radius: 4px;
            background: var(--accent); color: #fff; text-decoration: none; cursor: pointer; }
        .danger { background: var(--bad); border-color: var(--bad); }
        .columns { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: 24px; }
        section.license { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 20px 16px; margin: 16px 0; }
        .plan { color: var(--muted); font-weight: 400; }
        .state { padding: 8px 12px; border-radius: 4px; background: #eef3fb; }
        .state-active { background: #e7f4ea; } .state-grace { background: #fff4dc; } .state-expired, .state-revoked, .state-suspended { background: #fde8e7; }
        .facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; }
        .facts dt { color: var(--muted); } .facts dd { margin: 0; }
        .features { list-style: none; padding: 0; } .features .excluded { color: var(--muted); }
        .tag { font-size: 0.85em; color: var(--muted); }
        .notice { background: #e7f4ea; padding: 8px 12px; border-radius: 4px; }
        .error { background: #fde8e7; padding: 8px 12px; border-radius: 4px; }
        .warning { background: #fff4dc; padding: 8px 12px; border-radius: 4px; }
        .over td { color: var(--bad); }
        .key code { font-size: 1.3em; padding: 8px; background: #fff; border: 1px solid var(--line); display: inline-block; }
        .search { display: grid; grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); gap: 0 12px; align-items: end; }
        .actions { list-style: none; display: flex; gap: 12px; padding: 0; flex-wrap: wrap; }
        .tabs ul { margin-bottom: 12px; }
        .sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
        figure { margin: 8px 0; } svg { max-width: 100%; height: auto; }
        @media (max-width: 600px) { body { font-size: 15px; } main { padding: 8px 10px 32px; } th, td { padding: 4px; } .sign-out { margin-left: 0; } }
        """

    static let script = """
        // Dates arrive as ISO text; show them in the viewer's own locale.
        document.querySelectorAll('time[datetime]').forEach(function (element) {
          var value = element.getAttribute('datetime');
          if (!value) return;
          var date = new Date(value);
          if (isNaN(date.getTime())) return;
          element.title = value;
          element.textContent = element.hasAttribute('data-time') ? date.toLocaleString() : date.toLocaleDateString(undefined, { timeZone: 'UTC' });
        });
        """
}
